"""One exception for problems with the user's input, the one-line way commands report it, and
how they stop when interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import re
import signal
import sys
import threading
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """Bad input from the user: a file, a record or a setting. The message is one line that
    names the file (and the record or key) and the problem; commands print it without a
    traceback and exit with status 2."""


class ConfigError(UserError):
    """A config file or override that cannot be used (a :class:`UserError` like any other)."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage mistakes (a missing option, a value of the
    wrong type) are a :class:`UserError` too: one line naming the option, exit status 2,
    instead of the usage text plus an error line. Only inside a ``report_user_errors`` main."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")

    def _get_values(self, action, arg_strings):
        # argparse drops a value "--" (``--opt=--``) and hands the option an empty list,
        # without calling its type: the command would fail later with a traceback.
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)


def bounded_int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number in ``lo..hi`` (either end open when None): one
    helper for the numeric options of every command, so that a value outside its range is
    refused by the parser (one line, exit 2) before any work, not by a traceback minutes later."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more than 4300 digits
            raise argparse.ArgumentTypeError(f"expected a whole number, got {_shown(text)}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{_shown(text)} is outside {_range_text(lo, hi)}")
        return value

    parse.__name__ = "whole number"  # what argparse calls the type in its own messages
    parse.bounds = (lo, hi)  # type: ignore[attr-defined]
    return parse


def bounded_float(lo: float | None = None, hi: float | None = None, finite: bool = True,
                  above: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a number in ``[lo, hi]`` (``(lo, hi]`` with ``above``);
    NaN is always refused (no range holds it), infinities unless ``finite`` is False."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {_shown(text)}") from None
        if math.isnan(value) or (finite and math.isinf(value)):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {_shown(text)}")
        low_ok = lo is None or (value > lo if above else value >= lo)
        if not low_ok or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{_shown(text)} is outside {_range_text(lo, hi, above)}")
        return value

    parse.__name__ = "number"
    parse.bounds = (lo, hi)  # type: ignore[attr-defined]
    return parse


def _shown(text: str, limit: int = 40) -> str:
    """A value quoted in a one-line message: repr (so control characters show), cut when long."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _range_text(lo, hi, above: bool = False) -> str:
    num = lambda v: str(v) if isinstance(v, int) else f"{v:g}"  # noqa: E731
    if hi is None:
        return f"the range {'>' if above else '>='} {num(lo)}"
    if lo is None:
        return f"the range <= {num(hi)}"
    return f"the range {'(' if above else '['}{num(lo)}, {num(hi)}]"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def library_message(err: BaseException, limit: int = 200) -> str:
    """What a library's exception says, fit to quote inside a one-line error: terminal colour
    codes removed (torch prints some), white space folded, and when it is long, cut after its
    first sentence (or at a word, with "...") rather than mid-word."""
    text = " ".join(_ANSI.sub("", str(err)).split()) or type(err).__name__
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.;!?](?=\s)", text[: limit + 1])]
    if ends and ends[-1] >= 20:
        return text[: ends[-1]]
    space = text.rfind(" ", 0, limit)
    return text[: space if space > 0 else limit].rstrip(" ,;:") + "..."


@contextlib.contextmanager
def interrupt_exits_130() -> Iterator[None]:
    """Ctrl-C inside the block prints ``interrupted`` and exits 130, without a traceback. For
    the seconds a command spends importing torch, before its ``main`` can catch anything."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (``kill``, a scheduler's time limit) like Ctrl-C. By default SIGTERM ends
    the process without running ``finally`` blocks, which would leave a command's temporary
    folder behind; as a KeyboardInterrupt it gets the same clean-up, then ``interrupted``, exit
    130 (:func:`report_user_errors`). Used by make-shards and symclr-synth."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_user_errors(main: F) -> F:
    """Wrap a command's ``main`` so that a :class:`UserError` becomes one line on stderr and
    exit status 2, and Ctrl-C exits 130 without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        with interrupt_exits_130():
            try:
                return main(*args, **kwargs)
            except UserError as err:
                message = " ".join(str(err).split())  # always one line
                print(f"error: {message}", file=sys.stderr)
                raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]
