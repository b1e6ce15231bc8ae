"""The highest leader term this worker has seen, kept in ``ROOT/term``.

Masters on etcd stamp their term on every request (and announce it in the
Welcome).  A deposed leader, paused past its lease and woken up, still
holds its old term: the worker refuses whatever it asks, with one log line
saying why.  The term survives a worker restart, so a restarted worker
cannot be talked into following the old leader either.  Requests without
a term (a master not on etcd) are refused only once a term was seen.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from corral.daemon.beneath import write_atomic

FILE = "term"


class Fence:
    """``highest``: the newest term seen; ``refusal`` says why an older one is refused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.highest = 0
        with contextlib.suppress(OSError, ValueError):  # none yet, or unreadable: none seen
            self.highest = max(0, int((root / FILE).read_text().strip() or 0))

    def refusal(self, term: int) -> str:
        """Why a request of ``term`` is refused ("" if it may run)."""
        if term >= self.highest:
            return ""
        return f"term {term} is older than term {self.highest}: its master no longer leads"

    def see(self, term: int) -> None:
        """A master of ``term`` was accepted: remember it if it is the newest (on disk first)."""
        if term <= self.highest:
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            write_atomic(fd, FILE, f"{term}\n".encode())
        finally:
            os.close(fd)
        self.highest = term
