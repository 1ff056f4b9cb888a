"""The one place for files: reading JSON with one-line errors, and atomic writes (every output
goes to a temporary name beside its target and is renamed into place only when complete, so
an interrupted or failed command leaves no half-written file or folder behind)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from symclr_ft.errors import UserError


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
        raise UserError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}: {what} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not valid JSON (not UTF-8 text)") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise UserError(f"{path}: {what} is not valid JSON ({err})") from None
    except RecursionError:
        raise UserError(f"{path}: {what} is not valid JSON (nested too deeply)") from None


def _check_writable_dir(directory: Path) -> None:
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
    _check_writable_dir(target.parent)
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
    _check_writable_dir(target.parent)
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
            _swap_in(tmp, target)
        except OSError as err:
            raise UserError(f"{target}: cannot replace it ({err.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``; an existing ``target`` is moved aside first and put
    back if the rename fails or is interrupted."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
