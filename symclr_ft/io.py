"""The one place for files: reading JSON with one-line errors, and atomic writes (every output
goes to a temporary name beside its target and is renamed into place only when complete, so
an interrupted or failed command leaves no half-written file or folder behind)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from symclr_ft.errors import UserError, library_message


def read_json(path: str | Path, what: str = "JSON file", missing_hint: str = "") -> Any:
    """Parse ``path`` as JSON; any problem (missing, unreadable, not UTF-8, not JSON, absurdly
    nested) is a :class:`UserError` naming the file and ``what`` it should have been.
    ``missing_hint`` is appended when the file does not exist (e.g. "run make-shards first")."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        hint = f" ({missing_hint})" if missing_hint else ""
        raise UserError(f"{path}: {what} not found{hint}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a {what}") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read {what} ({err.strerror or library_message(err)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}: {what} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not valid JSON (not UTF-8 text)") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise UserError(f"{path}: {what} is not valid JSON ({library_message(err)})") from None
    except RecursionError:
        raise UserError(f"{path}: {what} is not valid JSON (nested too deeply)") from None


def ensure_writable_dir(directory: str | Path) -> None:
    """Create ``directory`` (and its parents) if needed; one line when that is impossible
    (a file in the way, no permission) or the folder cannot be written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{directory}: cannot create output folder ({err.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"{directory}: output folder is not writable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    ensure_writable_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise UserError(f"{target}: cannot write into {target.parent} ({err.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            # mkstemp makes owner-only files; give the result the permissions a plain open() would
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, target)
        except OSError as err:
            raise UserError(f"{target}: cannot replace it ({err.strerror})") from None
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        try:
            tmp.write_text(text)
        except OSError as err:  # disk full, quota
            raise UserError(f"{target}: cannot write ({err.strerror})") from None


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it replaces ``target``
    (the old folder is removed only after the new one is complete)."""
    target = Path(target)
    ensure_writable_dir(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise UserError(f"{target}: cannot write into {target.parent} ({err.strerror})") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes owner-only folders
        if target.exists() and not replace:
            raise UserError(f"{target}: already exists")
        try:
            replace_dir(tmp, target)
        except OSError as err:
            raise UserError(f"{target}: cannot replace it ({err.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _renames_or_none(moves: list[tuple[Path, Path]]) -> None:
    """``os.replace`` each (source, destination) in order; if one fails or is interrupted
    (Ctrl-C included), undo those already done, in reverse order, and re-raise."""
    done: list[tuple[Path, Path]] = []
    try:
        for source, destination in moves:
            os.replace(source, destination)
            done.append((source, destination))
    except BaseException:
        for source, destination in reversed(done):
            os.replace(destination, source)
        raise


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Rename the complete folder ``new`` onto ``target`` (same file system). An existing
    ``target`` is moved aside first, put back if the rename fails or is interrupted, and
    deleted only once ``new`` is in place. Raises ``OSError``; callers word the message."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    _renames_or_none([(target, aside), (new, target)])
    shutil.rmtree(aside, ignore_errors=True)


def replace_files(new_dir: str | Path, target_dir: str | Path, old: list[Path]) -> None:
    """Move every entry of ``new_dir`` into ``target_dir``, replacing the entries ``old``
    (those of ``target_dir`` that the caller wrote and can name); everything else in
    ``target_dir`` stays. ``old`` is moved aside first and put back if any move fails or is
    interrupted; an entry of ``new_dir`` whose name is taken by a file not in ``old`` is refused
    (``FileExistsError``) before anything moves. Raises ``OSError``; callers word the message."""
    new_dir, target_dir = Path(new_dir), Path(target_dir)
    names = {Path(p).name for p in old}
    incoming = sorted(new_dir.iterdir())
    taken = [p.name for p in incoming if (target_dir / p.name).exists() and p.name not in names]
    if taken:
        raise FileExistsError(errno.EEXIST, "would replace a file it did not write", str(target_dir / taken[0]))
    backup = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.old-", dir=target_dir.parent))
    try:
        moves = [(target_dir / name, backup / name) for name in sorted(names) if (target_dir / name).exists()]
        moves += [(path, target_dir / path.name) for path in incoming]
        _renames_or_none(moves)
    finally:
        shutil.rmtree(backup, ignore_errors=True)
