"""Atomic writes leave files with the permissions a plain open() would give them."""

import os
import stat

from symclr_ft.io import atomic_dir, write_json


def test_atomic_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert (tmp_path / "folder" / "x").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_replace_files_swaps_only_the_named_files(tmp_path):
    import pytest

    from symclr_ft.io import replace_files

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    new.mkdir()
    (target / "a.tar").write_text("old a")
    (target / "README.md").write_text("mine")
    (new / "a.tar").write_text("new a")
    (new / "b.tar").write_text("new b")
    replace_files(new, target, [target / "a.tar"])
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.tar": "new a", "b.tar": "new b", "README.md": "mine"}
    (new / "README.md").write_text("theirs")  # new is empty now: its files moved
    with pytest.raises(FileExistsError):
        replace_files(new, target, [target / "a.tar"])
    assert (target / "README.md").read_text() == "mine" and (target / "a.tar").read_text() == "new a"


def test_replace_files_interrupted_halfway_puts_everything_back(tmp_path, monkeypatch):
    import pytest

    from symclr_ft.io import replace_files

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    new.mkdir()
    for name in ("a", "b"):
        (target / name).write_text(f"old {name}")
        (new / name).write_text(f"new {name}")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # both old files aside, one new file in
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        replace_files(new, target, [target / "a", target / "b"])
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "old a", "b": "old b"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_replace_dir_keeps_the_old_folder_when_the_swap_fails(tmp_path, monkeypatch):
    import pytest

    from symclr_ft.io import replace_dir

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "x").write_text("old")
    (tmp_path / "state.tmp").mkdir()
    (tmp_path / "state.tmp" / "x").write_text("new")
    replace_dir(tmp_path / "state.tmp", tmp_path / "state")
    assert (tmp_path / "state" / "x").read_text() == "new" and not (tmp_path / "state.tmp").exists()
    (tmp_path / "state.tmp").mkdir()
    real = os.replace

    def replace(src, dst):
        if str(src).endswith("state.tmp"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        replace_dir(tmp_path / "state.tmp", tmp_path / "state")
    assert (tmp_path / "state" / "x").read_text() == "new"
