"""One exception for problems with the user's input, and the one-line way commands report it."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, TypeVar

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


def report_user_errors(main: F) -> F:
    """Wrap a command's ``main`` so that a :class:`UserError` becomes one line on stderr and
    exit status 2, and Ctrl-C exits 130 without a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            message = " ".join(str(err).split())  # always one line
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
