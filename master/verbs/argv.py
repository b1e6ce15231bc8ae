"""argparse for corral: the help formatter and a parser that never exits.

Loaded only where argparse reads a command line: ``--help``, a usage
error, the process verbs, and the dashboard's ``:`` line (a plain client
command line is read by `quickargs`, without argparse).
"""

from __future__ import annotations

import argparse
import os
import sys

from corral.master.verbs.base import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help as written; a ``REMAINDER`` argument shows its metavar (``-- PROGRAM ...``).

    The width is found as ``shutil.get_terminal_size`` finds it, without
    importing shutil (and the compression modules it loads): argparse makes
    a formatter for every argument added, so every verb would pay for it.
    """

    def __init__(self, prog: str, **kwargs: Any) -> None:
        if kwargs.get("width") is None:
            kwargs["width"] = terminal_width() - 2  # argparse's own margin
        super().__init__(prog, **kwargs)

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.nargs == argparse.REMAINDER and isinstance(action.metavar, str):
            return action.metavar
        return super()._format_args(action, default_metavar)


def terminal_width() -> int:
    """``$COLUMNS``, else stdout's terminal width, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isascii() and columns.isdigit() and int(columns) > 0:
        return int(columns)
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout else 0) or 80
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one `UsageError` line, never exiting.

    ``hint`` ends the message: "(try `corral stop --help`)" on the command
    line, the usage in the dashboard.
    """

    def __init__(self, *args: Any, hint: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)
        self.hint = hint
        self._words: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        hint = self.hint or f"(try `{self.prog} --help`)"
        raise UsageError(f"{message}{self._dashed_value(message)} {hint}")

    def _dashed_value(self, message: str) -> str:
        """For "argument --mem: expected one argument" where the value given
        looks like a negative quantity (``--mem -5M``, which argparse takes
        for an option): how to write it so it is read, and then judged."""
        head, _, tail = message.partition(": ")
        if not head.startswith("argument ") or tail != "expected one argument":
            return ""
        names = head.removeprefix("argument ").split("/")
        words = self._words
        for i, word in enumerate(words[:-1]):
            value = words[i + 1]
            if word in names and value[:1] == "-" and value[1:2] in set("0123456789."):
                return f" ({value!r} reads as an option; write {word}={value})"
        return ""
