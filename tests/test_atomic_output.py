"""Atomic outputs (twin.atomic): nothing half-written under the final name, and the
permissions a plain ``open(path, "w")`` gives (the temporary's are owner-only)."""

from __future__ import annotations

import stat

import pytest

from twin.atomic import atomic_path, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomic_file_gets_the_mode_of_a_plain_one(tmp_path):
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:  # the independent reference: the process's umask at work
        f.write("x")
    write_text_atomic(tmp_path / "report.json", "{}")
    assert _mode(tmp_path / "report.json") == _mode(plain)
    assert (tmp_path / "report.json").read_text() == "{}"


def test_a_crash_leaves_neither_the_file_nor_its_temporary(tmp_path):
    (tmp_path / "old.h5").write_text("previous run")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "old.h5") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "old.h5").read_text() == "previous run"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.h5"]
