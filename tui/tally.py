"""Header counts kept up to date from changed rows only (never a full scan per tick).

Every process is in exactly one bucket, and the ``state:`` filter words
of the processes pane use the same buckets, so the header's "4 running"
is what ``state:running`` shows:

- running: alive on a reachable node (running, sleeping, stopped, zombie);
- ended: exited 0, or ended by a stop the operator asks for (SIGINT or
  SIGTERM, without a core dump): `corral stop`, `s` and escalation send
  SIGINT, and the master does not record which signals it sent, so an
  ending by SIGINT/SIGTERM counts as a stop however it came;
- failed: a non-zero exit, killed by any other signal (SIGKILL, SIGSEGV,
  ...), a core dump, an ending nobody saw ("unknown"), or lost with its node.
"""

from __future__ import annotations

from collections import Counter

from corral.master.model import Cluster, NodeView, ProcView
from corral.transport.messages import ALIVE_STATES

RUNNING, ENDED, FAILED = "running", "ended", "failed"
BUCKETS = (RUNNING, ENDED, FAILED)
STOP_SIGNALS = frozenset({"SIGINT", "SIGTERM"})  # what a requested graceful stop sends


def proc_kind(
    state: str, exit_code: int | None, signal: str | None = None, core_dumped: bool = False
) -> str:
    """The bucket of one process, from its state (a view's: "lost" included) and ending."""
    if state == "lost":
        return FAILED
    if state in ALIVE_STATES:
        return RUNNING
    if state == "exited":
        return ENDED if exit_code == 0 else FAILED
    if state == "killed" and signal in STOP_SIGNALS and not core_dumped:
        return ENDED
    return FAILED


def view_kind(view: ProcView) -> str:
    """The bucket of a snapshot (see `proc_kind`)."""
    return proc_kind(view.state, view.exit_code, view.signal, view.core_dumped)


def stopped(view: ProcView) -> bool:
    """Ended by a graceful stop (SIGINT/SIGTERM, no core): not a failure."""
    return view.state == "killed" and view_kind(view) == ENDED


class Tally:
    """Nodes by state and processes by bucket, adjusted one row at a time."""

    def __init__(self) -> None:
        self._nodes: dict[str, str] = {}
        self._procs: dict[str, str] = {}
        self.counts: Counter[str] = Counter()

    def node(self, view: NodeView) -> None:
        old = self._nodes.get(view.name)
        if old is not None:
            self.counts[old] -= 1
        self._nodes[view.name] = view.state
        self.counts[view.state] += 1

    def proc(
        self,
        key: str,
        state: str,
        exit_code: int | None,
        signal: str | None = None,
        core_dumped: bool = False,
    ) -> None:
        self._put(key, proc_kind(state, exit_code, signal, core_dumped))

    def proc_in(self, cluster: Cluster, key: str) -> bool:
        """Count process ``key`` as ``cluster`` has it now; False (and dropped) if gone.

        Cheap for the common case, a live process's figures moving: no
        snapshot is taken unless it was killed (the signal decides).
        """
        raw = cluster.proc_state(key)
        if raw is None:
            self.drop_proc(key)
            return False
        state, exit_code = raw
        if state in ALIVE_STATES:
            lost = cluster.node_state(key.rpartition(":")[0]) == "lost"
            self._put(key, FAILED if lost else RUNNING)
        elif state == "killed" and (view := cluster.proc(key)) is not None:
            self._put(key, view_kind(view))
        else:
            self._put(key, proc_kind(state, exit_code))
        return True

    def _put(self, key: str, kind: str) -> None:
        old = self._procs.get(key)
        if old == kind:
            return  # the common case under a feed: same bucket, nothing to count
        if old is not None:
            self.counts[old] -= 1
        self._procs[key] = kind
        self.counts[kind] += 1

    def drop_proc(self, key: str) -> None:
        kind = self._procs.pop(key, None)
        if kind is not None:
            self.counts[kind] -= 1
