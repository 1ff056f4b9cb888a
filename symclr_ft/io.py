"""The one place for files: reading JSON with one-line errors, and atomic writes (every output
goes to a temporary name beside its target and is renamed into place only when complete, so
an interrupted or failed command leaves no half-written file or folder behind)."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

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
    (the old folder is removed only after the new one is complete). The whole old folder goes:
    only for folders the code owns entirely; a folder a user names on the command line goes
    through :func:`output_dir`, which never deletes the user's files."""
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
    taken = [p.name for p in incoming if os.path.lexists(target_dir / p.name) and p.name not in names]
    if taken:
        raise FileExistsError(errno.EEXIST, "would replace a file it did not write", str(target_dir / taken[0]))
    # the backup lies inside target_dir (same file system; its parent need not be writable)
    backup = Path(tempfile.mkdtemp(prefix=".symclr-old-", dir=target_dir))
    try:
        moves = [(target_dir / name, backup / name) for name in sorted(names)
                 if os.path.lexists(target_dir / name)]
        moves += [(path, target_dir / path.name) for path in incoming]
        _renames_or_none(moves)
    finally:
        shutil.rmtree(backup, ignore_errors=True)


# --------------------------------------------------------------------------- command outputs
#
# The one rule for every command that writes a folder (symclr-embed, symclr-spot, symclr-synth,
# make-shards, symclr-universe; training runs through tracking.RUN_OUTPUT): a command replaces
# only a folder it wrote itself, and in it only its own entries; a folder that is not its own
# is refused unless it is empty or --overwrite is given, and even then only the command's own
# entries are replaced, never the user's other files. A regular file is never replaced by a
# folder. How it tells its own folder: the manifest below, which it writes into every output.

OUTPUT_MANIFEST = ".symclr-output.json"


@dataclass(frozen=True)
class OutputKind:
    """What one command writes into its output folder: the entries it may replace there.

    ``names`` and ``patterns`` (``fnmatch``) are its entries; ``legacy`` are files that
    together mark an output it wrote before outputs carried a manifest (so that re-running a
    command on its old output needs no ``--overwrite``); an empty ``legacy`` recognises none.
    ``manifest=False`` for a command that always writes among other files (make-shards): its
    entries are told by their names alone, and its folder gets no manifest."""

    command: str
    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    legacy: tuple[str, ...] = ()
    manifest: bool = True

    def owns(self, name: str) -> bool:
        """Whether an entry of this name is one that the command writes."""
        return name in self.names or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def entries_in(self, folder: str | Path) -> list[Path]:
        """The entries of ``folder`` that the command writes (by name), sorted."""
        folder = Path(folder)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if self.owns(p.name))


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of an output folder, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / OUTPUT_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        return None
    entries = data.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        data["entries"] = []
    return data


def _is_own_output(folder: Path, kind: OutputKind) -> bool:
    manifest = read_manifest(folder)
    if manifest is not None:
        return manifest["command"] == kind.command
    return bool(kind.legacy) and all((folder / name).is_file() for name in kind.legacy)


def check_output_dir(target: str | Path, kind: OutputKind, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output folder the command may not write (one line each):
    ``.``/``..``, a path that is not a folder, a folder that is neither empty nor an earlier
    output of this command (unless ``overwrite``), a parent that cannot be written."""
    target = Path(target)
    if target.name in ("", ".", ".."):
        raise UserError(f"{target}: name a folder for the output (a new one, or an earlier "
                        f"{kind.command} output), not '.' or '..'")
    try:
        os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:  # a name longer than the file system allows, a loop of links
        raise UserError(f"{str(target)[:200]}: cannot be looked up ({err.strerror})") from None
    if os.path.lexists(target) and not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder; {kind.command} writes a folder "
                        "there and never replaces a file by one")
    if target.is_dir() and not overwrite and not _is_own_output(target, kind):
        try:
            entries = sorted(p.name for p in target.iterdir())
        except OSError as err:
            raise UserError(f"{target}: cannot list the output folder ({err.strerror})") from None
        if entries:
            raise UserError(
                f"{target}: exists and is not an earlier {kind.command} output (it holds "
                f"{entries[0]!r}{' and more' if len(entries) > 1 else ''}); choose a new or "
                f"empty folder, or pass --overwrite to replace only {kind.command}'s own "
                "files in it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{target}: cannot create output folder ({err.strerror})") from None
    for folder in (target.parent, target) if target.is_dir() else (target.parent,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{target}: output folder is not writable ({folder})")
    return target


def _entries_to_replace(target: Path, kind: OutputKind, incoming: list[str]) -> list[Path]:
    """The entries of an existing output folder that a new output replaces: those the command
    writes (its names, the new output's, and those its earlier manifest lists, when it is
    its own); everything else in the folder stays."""
    manifest = read_manifest(target)
    listed = set(manifest["entries"]) if manifest and manifest["command"] == kind.command else set()
    mine = set(incoming) | ({OUTPUT_MANIFEST} if kind.manifest else set())
    mine |= {n for n in listed if n and "/" not in n and n not in (".", "..")}
    return sorted(p for p in target.iterdir() if kind.owns(p.name) or p.name in mine)


def _publish(tmp: Path, target: Path, kind: OutputKind, overwrite: bool) -> None:
    """Move the complete output ``tmp`` into place: a rename when ``target`` is new, else its
    entries into the existing folder, replacing the command's own (``replace_files``: those
    are put back if a move fails or is interrupted)."""
    check_output_dir(target, kind, overwrite)  # again: the folder may have changed meanwhile
    incoming = sorted(p.name for p in tmp.iterdir())
    if kind.manifest:
        manifest = {"command": kind.command, "entries": incoming + [OUTPUT_MANIFEST]}
        (tmp / OUTPUT_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    try:
        if not os.path.lexists(target):
            os.replace(tmp, target)
        else:
            replace_files(tmp, target, _entries_to_replace(target, kind, incoming))
    except OSError as err:
        raise UserError(f"{target}: cannot move the output into place "
                        f"({err.strerror or library_message(err)})") from None


@contextlib.contextmanager
def output_dir(target: str | Path, kind: OutputKind, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target`` for the command to write its output
    into; when the block ends without an error it is moved into place by the output rule
    (:func:`check_output_dir`, :func:`_publish`) with a manifest naming the command and its
    entries. On an error or an interruption (SIGTERM under ``errors.sigterm_as_interrupt``)
    the temporary folder is removed and ``target`` is as it was. Example::

        with output_dir(args.out, OutputKind("symclr-embed", ("index.json",)), args.overwrite) as tmp:
            write_json(tmp / "index.json", meta)
    """
    target = check_output_dir(target, kind, overwrite)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise UserError(f"{target}: cannot write into {target.parent} ({err.strerror})") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes owner-only folders
        _publish(tmp, target, kind, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(targets: Sequence[str | Path], replace: Sequence[str | Path] = ()) -> Iterator[Path]:
    """Files written together, that appear together or not at all (predictions, their skip
    list and threshold). Yields an empty temporary folder beside the targets (all in one
    folder); the caller writes the files it has, named as the targets, into it. On success
    they are moved into place together; ``replace`` are the existing files of the set that the
    caller may replace (its own): each is moved aside and put back if any move fails or is
    interrupted, and one that the new set does not hold is removed. A target whose name is
    taken by a file not in ``replace`` is refused before anything moves. On an error the
    temporary folder is removed and nothing in the folder has changed."""
    targets = [Path(t) for t in targets]
    folder = targets[0].parent
    if len({t.name for t in targets}) != len(targets) or any(t.parent != folder for t in targets):
        raise ValueError(f"atomic_files: targets must be distinct names in one folder: {targets}")
    ensure_writable_dir(folder)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{targets[0].name}.", suffix=".tmp", dir=folder))
    except OSError as err:
        raise UserError(f"{targets[0]}: cannot write into {folder} ({err.strerror})") from None
    try:
        yield tmp
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~_umask())  # as a plain open() would make them
        try:
            replace_files(tmp, folder, [Path(p) for p in replace])
        except FileExistsError as err:
            raise UserError(f"{err.filename}: exists and was not written by this command; "
                            "not replaced") from None
        except OSError as err:
            raise UserError(f"{targets[0]}: cannot move the output into place "
                            f"({err.strerror or library_message(err)})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
