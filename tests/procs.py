"""Process checks shared by the test packages."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil


def gone(pid: int) -> bool:
    """``pid`` has ended: no such process, or a zombie nobody has reaped yet.

    One call, not ``not pid_exists(p) or Process(p).status() == ...``: the
    process may be reaped between the two, and the second would raise.
    """
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def runs(pid: int, argv: list[str]) -> bool:
    """``pid`` has exec'd ``argv``: a launch's reply names the seed before its exec."""
    try:
        return bool(psutil.Process(pid).cmdline() == argv)
    except psutil.Error:
        return False


def ignores(pid: int, argv: list[str], sig: signal.Signals) -> bool:
    """``pid`` has exec'd ``argv`` and ignores ``sig`` (a shell's ``trap '' INT`` has run).

    Before its exec a launched process is the seed, which ignores what its
    shim ignores; so the command line is checked first.
    """
    if not runs(pid, argv):
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False
