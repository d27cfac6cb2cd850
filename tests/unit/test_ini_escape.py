"""Values written to uwsgi.ini arrive byte for byte, or are refused."""

import pytest

from conftest import filters as f
from uwsgi_ini_model import read_value

OPTIONS = dict(f.INI_PLACEHOLDERS, socket="/run/uwsgi/app.sock", processes="2")
ENV = {"HOME": "/var/www", "PATH": "/usr/bin"}
FILES = {"/etc/hostname": "uwsgi-test"}
HOSTILE = [
    "p%dss%(x)w$(HOME)r@(/etc/hostname)d", "100%", "%", "%%", "%d", "%(x)s", "$(HOME)", "$(PATH)", "$$(HOME)",
    "%$(HOME)", "@(/etc/hostname)", "@@(/etc/hostname)", "semi;colon and # hash", "quote\" and \\ backslash",
    "postgres://u:p;w@db/x?opt=1#frag", "unicodé ✓ 雪", "  leading", "trailing  ", "\ttab\t", " ", "a=b=c",
    "(paren)", "$", "@", "%(", "x" * 5000,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_escaped_values_arrive_exactly(value):
    assert read_value(f.uwsgi_ini_escape(value), OPTIONS, ENV, FILES) == value


@pytest.mark.parametrize("value", ["p%dss%(x)w$(HOME)r@(/etc/hostname)d", "100%", "$(HOME)", "trailing  "])
def test_the_model_shows_why_escaping_is_needed(value):
    assert read_value(value, OPTIONS, ENV, FILES) != value


@pytest.mark.parametrize("value, words", [
    ("a\nprocesses = 7", "a line break"), ("a\rb", "a carriage return"), ("a\0b", "a NUL"),
    ("%(socket)", "'%(socket)'"), ("%(a b)", "'%(a b)'"), ("%(uwsgi_role_dollar)", "which no escape keeps"),
    ("%(harakiri)", "'%(harakiri)'"),
])
def test_values_no_route_carries_are_refused_naming_app_key_and_character(value, words):
    apps = f.uwsgi_normalize([{"name": "app", "module": "m:app", "environment": {"TOKEN": value},
                               "options": {"harakiri": 30}}], {
        "socket_dir": "/run/uwsgi", "listen": 100, "processes": 2, "threads": 1, "user": "www-data",
        "group": "www-data", "chmod_socket": "660", "startsecs": 2, "install_method": "apt",
        "pip_virtualenv": "/opt/v", "binary": "/usr/bin/uwsgi"})
    found = " ".join(f.uwsgi_input_errors(apps, {}, {"net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096}))
    assert "uwsgi_apps[0] (app): environment.TOKEN holds" in found and words in found, found


def test_an_unknown_placeholder_is_carried_as_it_is():
    assert read_value(f.uwsgi_ini_escape("%(not_an_option)s"), OPTIONS, ENV, FILES) == "%(not_an_option)s"
