"""The data-dir rule, stated once (bpcli/datadir.py) and read nowhere else."""

import re
from pathlib import Path

from bpcli import datadir


def test_each_step_of_the_rule_beats_the_ones_after_it(monkeypatch):
    monkeypatch.setenv("BP_DATA_DIR", "/env")
    beside = ("/file", "config file")
    assert datadir.choose("/flag", "/set", beside) == ("/flag", "flag --data-dir")
    assert datadir.choose(None, "/set", beside) == ("/set", "--set")
    assert datadir.choose(None, None, beside) == ("/env", "$BP_DATA_DIR")
    monkeypatch.delenv("BP_DATA_DIR")
    assert datadir.choose(None, None, beside) == ("/file", "config file")
    assert datadir.choose(None, None, None) == ("data", "default")


def test_a_recorded_dir_is_looked_at_only_when_nothing_before_it_decides(monkeypatch):
    looked = []

    def recorded():
        looked.append(1)
        return None  # (it does not hold the verified files)

    monkeypatch.setenv("BP_DATA_DIR", "/env")
    assert datadir.choose(beside=recorded) == ("/env", "$BP_DATA_DIR") and looked == []
    monkeypatch.delenv("BP_DATA_DIR")
    assert datadir.choose(beside=recorded) == ("data", "default") and looked == [1]


def test_the_environment_variable_is_read_in_one_module():
    package = Path(datadir.__file__).parent
    readers = sorted(p.name for p in package.rglob("*.py") if re.search(r"environ.*BP_DATA_DIR|envvar=.BP_DATA", p.read_text()))
    assert readers == []  # (datadir reads it through its ENV name)
    assert [p.name for p in package.rglob("*.py") if '"BP_DATA_DIR"' in p.read_text()] == ["datadir.py"]
