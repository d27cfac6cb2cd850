"""The fleet report: the sampler's metrics file read back by the role's
parser (checked against the Prometheus client's own), and the listeners
capped by an older net.core.somaxconn."""

from prometheus_client.parser import text_string_to_metric_families

from conftest import FIXTURES, filters as f, uwsgi_host as h

PROM = (FIXTURES / "bookworm" / "uwsgi.prom").read_text()
SS = (FIXTURES / "bookworm" / "ss-listening.txt").read_text()


def test_the_parser_reads_the_samplers_file_as_prometheus_does():
    ours = [(s["name"], s["labels"], s["value"]) for s in h.parse_prometheus_text(PROM)]
    theirs = [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(PROM) for s in fam.samples]
    assert ours == theirs and len(ours) == 16


def test_the_parser_unescapes_labels_and_refuses_what_is_not_a_sample():
    assert h.parse_prometheus_text('m{a="x\\\\y\\"z\\n",b=""} 2 1700000000\n') == [
        {"name": "m", "labels": {"a": 'x\\y"z\n', "b": ""}, "value": 2.0}]
    for bad in ("m{a=x} 1", "m 1 2 3", "{a=\"x\"} 1"):
        try:
            h.parse_prometheus_text(bad)
        except ValueError as exc:
            assert "line 1" in str(exc)
        else:
            raise AssertionError(bad)


def probe(**changes):
    return dict({"textfile_samples": h.parse_prometheus_text(PROM), "listeners": h.parse_ss_listeners(SS),
                 "sysctl_live": {"net.core.somaxconn": 4096}, "sysctl_settings": []}, **changes)


def test_each_app_has_its_backlog_peak_and_share():
    report = f.uwsgi_report({"web-1": probe()})
    rows = {a["app"]: a for a in report["apps"]}
    assert (rows["flaskapp"]["backlog"], rows["flaskapp"]["peak"], rows["flaskapp"]["peak_pct"]) == (4096, 500, 12.2)
    assert rows["flaskapi"]["up"] and rows["flaskapi"]["overflows"] == 0
    assert any("flaskapp" in line and "12.2%" in line for line in report["lines"])


def test_listeners_at_an_older_limit_are_named_and_the_apps_own_are_not():
    listeners = h.parse_ss_listeners(SS + "tcp LISTEN 0 128 0.0.0.0:80 0.0.0.0:* users:((\"nginx\",pid=7,fd=6))\n"
                                     "tcp LISTEN 0 511 0.0.0.0:81 0.0.0.0:*\n"
                                     "u_str LISTEN 0 1024 /run/other.sock 1 * 0\n")
    sysctl = [{"path": "/etc/sysctl.d/10-old.conf", "key": "net.core.somaxconn", "value": "1024"}]
    capped = f.uwsgi_report({"web-1": probe(listeners=listeners, sysctl_settings=sysctl)})["capped"]
    sockets = {c["socket"]: c for c in capped}
    assert sockets["0.0.0.0:80"]["owners"] == ["nginx"]
    # An older limit persisted in a sysctl file counts; 511 is what nginx asked for, not a cap.
    assert "/run/other.sock" in sockets and "0.0.0.0:81" not in sockets
    assert "/run/uwsgi/flaskapp.sock" not in sockets


def test_nothing_is_capped_when_the_limit_was_never_raised():
    report = f.uwsgi_report({"web-1": probe(sysctl_live={"net.core.somaxconn": 128})})
    assert report["capped"] == [] and "No listener is capped" in report["lines"][-1]


def test_a_host_without_metrics_is_named():
    report = f.uwsgi_report({"web-1": probe(textfile_samples=None), "web-2": probe()})
    assert report["missing"] == ["web-1"] and [a["host"] for a in report["apps"]] == ["web-2", "web-2"]


def test_systemds_own_sockets_are_left_out_of_the_restart_advice_and_counted():
    """systemd's and journald's sockets (the captured host's five) keep their
    backlog until a boot; restarting them is not the fix for an app."""
    listeners = h.parse_ss_listeners(SS + "tcp LISTEN 0 128 0.0.0.0:80 0.0.0.0:* users:((\"nginx\",pid=7,fd=6))\n")
    report = f.uwsgi_report({"web-1": probe(listeners=listeners)})
    assert [c["socket"] for c in report["capped"]] == ["0.0.0.0:80"]
    assert len(report["system"]) == 5 and all("/run/systemd/" in s["socket"] for s in report["system"])
    assert report["lines"][-1].startswith("Left out: 5 sockets systemd holds itself")
    assert not any("systemd" in line for line in report["lines"][:-1])
