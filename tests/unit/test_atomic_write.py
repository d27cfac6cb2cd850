"""A write stopped by a full disk (library/uwsgi_files.py write_file and
undo_writes): the files are as they were and no backup is left beside them."""

import errno
import sys

import pytest
from conftest import load

for _name in ("uwsgi_host", "uwsgi_trial"):
    if "ansible.module_utils." + _name not in sys.modules:
        load("ansible.module_utils." + _name, "module_utils/%s.py" % _name)
files = load("uwsgi_files_module", "library/uwsgi_files.py")


class Module:
    check_mode = False

    @staticmethod
    def load_file_common_arguments(params):
        return params

    @staticmethod
    def set_fs_attributes_if_different(_attrs, changed, _diff=None):
        return changed


def full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def result():
    return {"changed_files": [], "diff": [], "backups": {}, "undo": []}


def test_a_file_that_could_not_be_replaced_leaves_no_backup(tmp_path, monkeypatch):
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nlisten = 1000\n")
    done = result()
    monkeypatch.setattr(files.tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError):
        files.write_file(Module, {"path": str(ini), "content": "[uwsgi]\nlisten = 3000\n", "backup": True},
                         False, done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.ini"]
    assert ini.read_text() == "[uwsgi]\nlisten = 1000\n" and done["backups"] == {}


def test_a_write_stopped_half_way_puts_back_what_it_had_written(tmp_path, monkeypatch):
    first, second, new = tmp_path / "a.ini", tmp_path / "b.ini", tmp_path / "c.ini"
    first.write_text("old a\n")
    second.write_text("old b\n")
    done = result()
    files.write_file(Module, {"path": str(first), "content": "new a\n", "backup": True}, False, done)
    files.write_file(Module, {"path": str(new), "content": "new c\n", "backup": True}, False, done)
    monkeypatch.setattr(files.tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError):
        files.write_file(Module, {"path": str(second), "content": "new b\n", "backup": True}, False, done)
    assert files.undo_writes(done["undo"]).startswith("Every file this run had written was put back")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ini", "b.ini"]
    assert first.read_text() == "old a\n" and second.read_text() == "old b\n"
