"""Header counts kept up to date from changed rows only (never a full scan per tick)."""

from __future__ import annotations

from collections import Counter

from corral.master.model import NodeView
from corral.transport.messages import ALIVE_STATES

_RUNNING, _ENDED, _FAILED = ("running",), ("ended",), ("ended", "failed")


def proc_kind(state: str, exit_code: int | None) -> tuple[str, ...]:
    """The header buckets of one process: running (lost too), ended, and failed (not exit 0)."""
    if state in ALIVE_STATES or state == "lost":
        return _RUNNING
    if state == "exited" and exit_code == 0:
        return _ENDED
    return _FAILED


class Tally:
    """Nodes by state and processes by bucket, adjusted one row at a time."""

    def __init__(self) -> None:
        self._nodes: dict[str, str] = {}
        self._procs: dict[str, tuple[str, ...]] = {}
        self.counts: Counter[str] = Counter()

    def node(self, view: NodeView) -> None:
        old = self._nodes.get(view.name)
        if old is not None:
            self.counts[old] -= 1
        self._nodes[view.name] = view.state
        self.counts[view.state] += 1

    def proc(self, key: str, state: str, exit_code: int | None) -> None:
        kinds = proc_kind(state, exit_code)
        if self._procs.get(key) == kinds:
            return  # the common case under a feed: same bucket, nothing to count
        self.drop_proc(key)
        self._procs[key] = kinds
        self.counts.update(kinds)

    def drop_proc(self, key: str) -> None:
        for kind in self._procs.pop(key, ()):
            self.counts[kind] -= 1
