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


# --------------------------------------------------------------------------- the output rule
# (issue 24) A command replaces only a folder it wrote itself, and in it only its own entries.


def _tree(folder):
    """Every file under ``folder`` with its bytes (the user's files, byte for byte)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _users_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "figures").mkdir()
    (path / "figures" / "a.png").write_bytes(b"\x89PNG not really")
    return _tree(path)


def _kind():
    """An output as a command would declare it."""
    from symclr_ft.io import OutputKind

    return OutputKind("symclr-test", ("index.json", "skipped.csv"), legacy=("index.json",))


def _write(target, files, overwrite=False):
    from symclr_ft.io import output_dir

    with output_dir(target, _kind(), overwrite) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


def test_a_folder_that_is_not_its_own_is_refused_and_kept_byte_for_byte(tmp_path):
    import pytest

    from symclr_ft.errors import UserError

    before = _users_folder(tmp_path / "mine")
    with pytest.raises(UserError) as err:
        _write(tmp_path / "mine", {"index.json": "{}"})
    assert "is not an earlier symclr-test output" in str(err.value) and "--overwrite" in str(err.value)
    assert _tree(tmp_path / "mine") == before
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary folder left


def test_overwrite_replaces_only_the_commands_own_entries(tmp_path):
    before = _users_folder(tmp_path / "mine")
    (tmp_path / "mine" / "skipped.csv").write_text("an earlier skip list")
    _write(tmp_path / "mine", {"index.json": "new"}, overwrite=True)
    after = _tree(tmp_path / "mine")
    assert {k: after[k] for k in before} == before  # the user's files, byte for byte
    assert after["index.json"] == b"new" and "skipped.csv" not in after  # own entries replaced


def test_its_own_folder_is_replaced_and_what_the_user_added_stays(tmp_path):
    import json

    from symclr_ft.io import OUTPUT_MANIFEST

    out = tmp_path / "out"
    _write(out, {"index.json": "first", "skipped.csv": "a,b"})
    manifest = json.loads((out / OUTPUT_MANIFEST).read_text())
    assert manifest == {"command": "symclr-test", "entries": ["index.json", "skipped.csv", OUTPUT_MANIFEST]}
    (out / "notes.txt").write_text("the user's")
    _write(out, {"index.json": "second"})  # no --overwrite needed: its own folder
    assert _tree(out) == {"index.json": b"second", "notes.txt": b"the user's",
                          OUTPUT_MANIFEST: (out / OUTPUT_MANIFEST).read_bytes()}
    legacy = tmp_path / "legacy"  # written before outputs carried a manifest
    legacy.mkdir()
    (legacy / "index.json").write_text("old")
    _write(legacy, {"index.json": "new"})
    assert (legacy / "index.json").read_text() == "new"


def test_a_file_is_never_replaced_by_a_folder_nor_dot_used(tmp_path, monkeypatch):
    import pytest

    from symclr_ft.errors import UserError

    (tmp_path / "results").write_text("a file of the user's")
    with pytest.raises(UserError, match="exists and is not a folder"):
        _write(tmp_path / "results", {"index.json": "{}"}, overwrite=True)
    assert (tmp_path / "results").read_text() == "a file of the user's"
    monkeypatch.chdir(tmp_path)
    for name in (".", "..", "sub/..", "./"):
        with pytest.raises(UserError, match="not '.' or '..'"):
            _write(name, {"index.json": "{}"}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_an_empty_folder_is_used_and_another_commands_output_is_not_its_own(tmp_path):
    import pytest

    from symclr_ft.errors import UserError
    from symclr_ft.io import OutputKind, output_dir

    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", {"index.json": "x"})
    assert (tmp_path / "empty" / "index.json").read_text() == "x"
    with output_dir(tmp_path / "other", OutputKind("symclr-other", ("index.json",))) as tmp:
        (tmp / "index.json").write_text("theirs")
    with pytest.raises(UserError, match="not an earlier symclr-test output"):
        _write(tmp_path / "other", {"index.json": "mine"})
    assert (tmp_path / "other" / "index.json").read_text() == "theirs"


def test_files_written_together_appear_together_or_not_at_all(tmp_path, monkeypatch):
    import pytest

    from symclr_ft.errors import UserError
    from symclr_ft.io import atomic_files

    names = [tmp_path / "p.csv", tmp_path / "p.skipped.csv", tmp_path / "p.threshold.json"]
    with atomic_files(names) as tmp:
        for path in names:
            (tmp / path.name).write_text(f"first {path.name}")
    before = _tree(tmp_path)
    real = os.replace

    def replace(src, dst):  # the third file cannot be moved in (a full disk, an interrupt)
        if str(dst).endswith("p.threshold.json") and ".tmp" in str(src):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match="No space left on device"):
        with atomic_files(names, replace=names) as tmp:
            for path in names:
                (tmp / path.name).write_text(f"second {path.name}")
    assert _tree(tmp_path) == before  # the first set, whole; no temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)
    monkeypatch.undo()
    (tmp_path / "q.csv").write_text("the user's")
    with pytest.raises(UserError, match="was not written by this command"):
        with atomic_files([tmp_path / "q.csv"]) as tmp:
            (tmp / "q.csv").write_text("mine")
    assert (tmp_path / "q.csv").read_text() == "the user's"
