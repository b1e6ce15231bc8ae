"""Names an operator types: processes (``NODE:PID``) and signals.

Standard library only and no imports, so the command line, the dashboard,
the API and the cluster model all read a name the same way, and the CLI
pays nothing for it.
"""

from __future__ import annotations

# The signals a verb may send to a process group: the worker accepts these.
SIGNALS = (
    "SIGINT",
    "SIGTERM",
    "SIGKILL",
    "SIGSTOP",
    "SIGCONT",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
)


class BadName(ValueError):
    """A name that does not parse; the message is one line for the operator."""


def split_target(text: str) -> tuple[str, int] | None:
    """``NODE:PID`` into ``(node, pid)``; None if it is not one.

    The last colon splits, so a node name may hold colons; the pid is
    ASCII digits.  Cheap enough for the model's hot lookups.
    """
    node, sep, pid = text.rpartition(":")
    if not sep or not node or not (pid.isascii() and pid.isdigit()):
        return None
    return node, int(pid)


def parse_target(text: str) -> tuple[str, int]:
    """``NODE:PID`` into ``(node, pid)``; `BadName` if malformed."""
    parts = split_target(text)
    if parts is None:
        raise BadName(f"bad process name {text!r}: expected NODE:PID")
    return parts


def signal_name(text: str) -> str:
    """``int``, ``INT`` or ``SIGINT`` as ``SIGINT``; `BadName` if not one of `SIGNALS`."""
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in SIGNALS:
        raise BadName(f"unknown signal {text!r}")
    return name
