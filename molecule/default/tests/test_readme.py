"""The README walked as a new user walks it, on a stock Debian 12 host (a
container of its own, started like the scenario's, without the Flask the
test image carries for the other tests): install the role from its git
source into an empty roles path with ansible-galaxy, run the README's minimal
playbook as it is, then put the README's nginx site in front and ask.

The README's requirements.yml names the public repository; here its src is
this checkout's committed tree at HEAD (file://), so what is installed is
exactly what a user would get from that commit. The install tier
(tests/install) checks the install itself; this walk needs a host."""

import os
import subprocess
import sys

import pytest
import yaml

import hostchecks as hc

sys.path.insert(0, str(hc.PROJECT / "benchmarks"))
import lib  # noqa: E402 the benchmarks' container helpers, shared

STOCK = f"{os.environ.get('UWSGI_TEST_PREFIX', 'uwsgi')}-readme-stock"


def run(argv, cwd, env=None):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=1200,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **(env or {})))


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    home = tmp_path_factory.mktemp("new-user")
    lib.create_host(STOCK)
    # A stock Debian 12 has no Flask: the README's playbook must bring it.
    lib.sh(STOCK, "dpkg --purge python3-flask")
    requirements = yaml.safe_load(hc.readme_block("# requirements.yml"))
    entry = requirements["roles"][0]
    assert entry["name"] == "backlogops.uwsgi" and entry["scm"] == "git", entry
    assert entry["src"].startswith("https://"), entry
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=hc.PROJECT, capture_output=True, text=True,
                          check=True).stdout.strip()
    entry.update(src=f"file://{hc.PROJECT}", version=head)
    (home / "requirements.yml").write_text(yaml.safe_dump(requirements))
    (home / "playbook.yml").write_text(hc.readme_block("# playbook.yml"))
    (home / "inventory").write_text(f"{STOCK} ansible_connection=community.docker.docker "
                                    "ansible_python_interpreter=/usr/bin/python3\n")
    roles = home / "roles"
    installed = run(["ansible-galaxy", "role", "install", "-r", "requirements.yml", "-p", str(roles)], home)
    played = run(["ansible-playbook", "-i", "inventory", "playbook.yml"], home, {"ANSIBLE_ROLES_PATH": str(roles)})
    yield home, installed, played
    if os.environ.get("UWSGI_TEST_KEEP", "0") != "1":
        lib.remove_container(STOCK)


@pytest.mark.extended
def test_the_minimal_playbook_converges_on_a_stock_host_as_written(walk):
    _, installed, played = walk
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-2000:]
    assert "app flaskapp: RUNNING, backlog 4096 on /run/uwsgi/flaskapp.sock, 2 workers" in hc.said(played)
    assert lib.app_backlog(STOCK) == 4096


@pytest.mark.extended
def test_the_readme_nginx_site_answers_200(walk):
    _, _, played = walk
    assert played.returncode == 0, played.stdout[-3000:]
    site = hc.readme_block("# /etc/nginx/sites-enabled/default", kind="nginx")
    lib.sh(STOCK, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light",
           timeout=600)
    subprocess.run(["docker", "exec", "-i", STOCK, "sh", "-c", "cat > /etc/nginx/sites-enabled/default"],
                   input=site, text=True, check=True)
    lib.sh(STOCK, "nginx -t && systemctl restart nginx")
    answer = lib.sh(STOCK, "python3 -c \"import urllib.request as u; r = u.urlopen('http://127.0.0.1/', timeout=10); "
                           "print(r.status, r.read().decode().strip())\"").stdout.strip()
    assert answer == "200 hello from flaskapp", answer
