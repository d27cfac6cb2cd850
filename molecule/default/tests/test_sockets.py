"""An app's unix socket as its client sees it, and where it was: the proof
connects as the web server's user (uwsgi_socket_client, www-data), so a socket
nginx could not open fails the run; an app without environment starts with
no warning from uWSGI; and a socket moved to another directory leaves neither
its file nor the directory the role made for it. Each test puts the README's
playbook back in force before it ends."""

import shlex

import pytest
import yaml

import hostchecks as hc

PLAYBOOK = hc.PROJECT / "playbooks" / "site.yml"
BASE_APPS = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]["uwsgi_apps"]
APPS = hc.apps_from_playbook(PLAYBOOK)
TMPFILES = "/etc/tmpfiles.d/uwsgi-supervisor.conf"
# 1.x's layout (one program that binds its own socket, with uWSGI's vacuum): what these tests read in its
# log and in the socket's directory; the beside layout's socket is test_beside's and test_move's.
SHOP = {"name": "shop", "module": "app:app", "chdir": "/srv/flaskapp", "socket": "/run/uwsgi-shop/shop.sock",
        "listen": 256, "check_path": "/", "apply_strategy": "graceful"}
NO_SECTION = "Can't find section"


def run_with(tmp_path, name, extra, *args):
    return hc.run_with(PLAYBOOK, tmp_path, name, extra, *args)


def restore(host, tmp_path):
    """The README's playbook again, without shop."""
    hc.ok(run_with(tmp_path, "restore", {"uwsgi_apps": BASE_APPS + [{"name": "shop", "state": "absent"}]}))
    for app in APPS:
        hc.check_request(host, app, f"hello from {app['name']}")
    assert "shop" not in hc.parsers.parse_supervisor_status(host.run("supervisorctl status").stdout)


def serves(host, socket):
    # Without environment, the test app names itself by its default APP_NAME.
    hc.check_request(host, {"name": "shop", "socket": socket, "protocol": "uwsgi"}, "hello from flaskapp")


def log_since(host, offset):
    return host.run(f"tail -c +{offset + 1} /var/log/supervisor/shop.log").stdout


@pytest.mark.extended
def test_a_socket_the_web_server_cannot_open_fails_the_run_naming_the_user_and_its_modes(host, tmp_path):
    """nobody:nogroup in a directory of its own: uWSGI serves, root's request
    would pass, but nginx as www-data gets Permission denied. The proof asks
    as www-data, so the new app is not kept."""
    shop = dict(SHOP, uid="nobody", gid="nogroup")
    try:
        run = run_with(tmp_path, "nogroup", {"uwsgi_apps": BASE_APPS + [shop]})
        said = hc.said(run)
        assert run.returncode != 0, said[-3000:]
        assert ("its socket client www-data (uwsgi_socket_client, groups www-data) may not connect to "
                "/run/uwsgi-shop/shop.sock: the socket is nobody:nogroup 0660, and www-data is neither its owner nor "
                "in its group nogroup, and its mode gives others no write; a web server running as www-data gets "
                "Permission denied and answers 502") in said, said[-3000:]
        assert "it never ran before, so its program and ini were removed again" in said
        assert "shop" not in hc.parsers.parse_supervisor_status(host.run("supervisorctl status").stdout)
    finally:
        restore(host, tmp_path)


@pytest.fixture(scope="module")
def shop_deployed(host, tmp_path_factory):
    """shop, without environment, as www-data in /run/uwsgi-shop: the run's output and its log before."""
    tmp = tmp_path_factory.mktemp("sockets")
    offset = int(host.run("stat -c %s /var/log/supervisor/shop.log 2>/dev/null || echo 0").stdout.strip())
    run = hc.ok(run_with(tmp, "shop", {"uwsgi_apps": BASE_APPS + [SHOP]}))
    yield {"run": run, "offset": offset, "tmp": tmp}
    restore(host, tmp)
    for path in ("/run/uwsgi-shop", "/run/uwsgi-shop2"):
        assert not host.file(path).exists, path


def test_an_app_without_environment_is_tried_and_starts_without_uwsgi_s_warning(host, shop_deployed):
    said = hc.said(shop_deployed["run"])
    assert "shop: tried aside (it is new): the app loaded" in said, said[-3000:]
    assert NO_SECTION not in said
    log = log_since(host, shop_deployed["offset"])
    assert "*** Starting uWSGI" in log and NO_SECTION not in log, log[:2000]
    serves(host, SHOP["socket"])


@pytest.mark.extended
def test_a_moved_socket_leaves_neither_its_file_nor_the_directory_the_role_made(host, shop_deployed):
    old, new = SHOP["socket"], "/run/uwsgi-shop2/shop.sock"
    assert "d /run/uwsgi-shop 1775 root www-data -" in host.file(TMPFILES).content_string
    # A socket uWSGI's vacuum leaves behind at its stop (as after a kill):
    # another owner makes it skip the file.
    host.check_output(f"chown root {old}")
    offset = int(host.check_output("stat -c %s /var/log/supervisor/shop.log"))
    moved = hc.ok(run_with(shop_deployed["tmp"], "moved", {"uwsgi_apps": BASE_APPS + [dict(SHOP, socket=new)]}))
    # uWSGI could not remove it (the log of its stop): the role did.
    assert "goodbye to uWSGI" in log_since(host, offset) and f"VACUUM: unix socket {old} removed" not in log_since(
        host, offset)
    assert not host.file(old).exists and not host.file("/run/uwsgi-shop").exists, hc.said(moved)[-3000:]
    tmpfiles = host.file(TMPFILES).content_string
    assert "/run/uwsgi-shop " not in tmpfiles and "d /run/uwsgi-shop2 1775 root www-data -" in tmpfiles
    serves(host, new)
    again = hc.ok(run_with(shop_deployed["tmp"], "moved-again", {"uwsgi_apps": BASE_APPS + [dict(SHOP, socket=new)]}))
    assert hc.recap_changed(again.stdout) == {host.backend.get_hostname(): 0}, again.stdout[-3000:]


@pytest.mark.extended
def test_the_proof_and_nginx_agree_on_a_socket_only_root_could_open(host, tmp_path):
    """Without the check, the app stays and nginx answers 502 on it with
    (13: Permission denied); the next run, with it, fails naming www-data."""
    shop = dict(SHOP, uid="nobody", gid="nogroup")
    site = "/etc/nginx/sites-enabled/shop"
    try:
        hc.ok(run_with(tmp_path, "unchecked", {"uwsgi_apps": BASE_APPS + [shop], "uwsgi_socket_client": ""}))
        host.check_output(f"printf %s {shlex.quote('server { listen 8089; location / { include uwsgi_params; uwsgi_pass unix:/run/uwsgi-shop/shop.sock; } }')} > {site} && systemctl reload nginx")
        before = hc.nginx_errors(host)
        status = host.run("python3 -c 'import urllib.request as u, urllib.error as e\ntry: print(u.urlopen(\"http://"
                          "127.0.0.1:8089/\").status)\nexcept e.HTTPError as x: print(x.code)'").stdout.strip()
        assert status == "502", status
        errors = host.run(f"tail -n +{before + 1} {hc.NGINX_ERRORS}").stdout
        assert "/run/uwsgi-shop/shop.sock failed (13: Permission denied)" in errors, errors
        checked = run_with(tmp_path, "checked", {"uwsgi_apps": BASE_APPS + [shop]})
        said = hc.said(checked)
        assert checked.returncode != 0
        assert "www-data (uwsgi_socket_client, groups www-data) may not connect to /run/uwsgi-shop/shop.sock: the " \
               "socket is nobody:nogroup 0660" in said, said[-3000:]
    finally:
        host.run(f"rm -f {site} && systemctl reload nginx")
        restore(host, tmp_path)


@pytest.mark.extended
def test_a_symlink_an_app_user_puts_on_the_old_socket_s_way_is_not_followed(host, tmp_path):
    """The socket sat in a directory its app's user owns; before the move,
    that user swaps the directory for a symlink to a directory of root's
    holding a stale socket of root's. Root removes nothing there, and says so."""
    old = "/srv/shop/sock/shop.sock"
    host.check_output("install -d -o www-data -g www-data -m 0755 /srv/shop /srv/shop/sock")
    host.check_output("install -d -o root -g root -m 0755 /run/victim && python3 -c \"import socket; "
                      "socket.socket(socket.AF_UNIX).bind('/run/victim/shop.sock')\"")
    try:
        hc.ok(run_with(tmp_path, "own-dir", {"uwsgi_apps": BASE_APPS + [dict(SHOP, socket=old)]}))
        host.check_output("runuser -u www-data -- sh -c 'mv /srv/shop/sock /srv/shop/sock.was && "
                          "ln -s /run/victim /srv/shop/sock'")
        moved = hc.ok(run_with(tmp_path, "own-dir-moved", {"uwsgi_apps": BASE_APPS + [SHOP]}))
        said = hc.said(moved)
        assert f"{old} was left as it is: sock on its way is not a directory (a symlink?)" in said, said[-3000:]
        victim = host.file("/run/victim/shop.sock")
        assert victim.is_socket and victim.user == "root"
        serves(host, SHOP["socket"])
    finally:
        host.run("rm -rf /srv/shop /run/victim")
        restore(host, tmp_path)
