"""The bottom layer's atomic directory builds: complete or nothing, replace or keep, never a temp dir left over."""

from __future__ import annotations

import pytest

from modalbridge.files import _UMASK, atomic_dir, atomic_write_text, write_json


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_atomic_dir_creates_and_replaces(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and not target.exists()  # built beside, invisible until the end
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1" and (target.stat().st_mode & 0o777) == 0o777 & ~_UMASK
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole, the old files are gone
    assert leftovers(tmp_path) == []


def test_atomic_dir_keep_leaves_an_existing_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "theirs.txt").write_text("x")
    with atomic_dir(target, existing="keep") as tmp:
        (tmp / "ours.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"] and leftovers(tmp_path) == []


def test_atomic_dir_failure_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"] and leftovers(tmp_path) == []


def test_atomic_files_get_an_ordinary_mode_not_mkstemps_private_one(tmp_path):
    new = tmp_path / "config.json"
    write_json(new, {"a": 1})
    assert (new.stat().st_mode & 0o777) == 0o666 & ~_UMASK and leftovers(tmp_path) == []
    private = tmp_path / "secret.txt"
    private.write_text("old")
    private.chmod(0o640)
    atomic_write_text(private, "new")  # replacing a file keeps the mode its owner gave it
    assert private.read_text() == "new" and (private.stat().st_mode & 0o777) == 0o640
