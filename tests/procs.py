"""Process checks shared by the test packages."""

from __future__ import annotations

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
