"""Waiting for processes to end, driven by the cluster's changes (no polling).

``stop --wait`` and ``kill --wait`` subscribe an `EndWatch` to the `Cluster`
before the signal goes out, so an end reported at once (the worker's reply
to the signal, or the process event right behind it) is not missed.  Each
watched process resolves once its row shows an ended state, with how it
ended and the seconds since the watch began; a row pruned in the same
change (the history rule) is read from its ``proc.ended`` event instead.
A process on a lost node is not ended: it may still run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from corral.master.model import Change, Cluster, ProcView
from corral.transport.messages import ENDED_STATES


class End:
    """How and when one watched process ended."""

    __slots__ = ("reason", "seconds")

    def __init__(self, reason: str, seconds: float) -> None:
        self.reason = reason
        self.seconds = seconds


class EndWatch:
    """Futures for the ends of ``procs``, fed by the cluster's changes until `close`."""

    def __init__(self, cluster: Cluster, procs: Iterable[ProcView]) -> None:
        self.cluster = cluster
        self.t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        self._argv = {p.key: " ".join(p.argv) for p in procs}
        self.ends: dict[str, asyncio.Future[End]] = {k: loop.create_future() for k in self._argv}
        self._unsubscribe = cluster.subscribe(self._changed)

    def _changed(self, change: Change) -> None:
        for key in change.procs:
            if key in self.ends:
                view = self.cluster.proc(key)
                if view is not None and view.state in ENDED_STATES:
                    self._resolve(key, view.reason)
        for ev in change.events:
            key = f"{ev.node}:{ev.pid}"
            if ev.kind == "proc.ended" and key in self.ends:
                # "NODE:PID REASON: COMMAND", as the model writes it
                text = ev.message.removeprefix(f"{key} ")
                self._resolve(key, text.removesuffix(f": {self._argv[key]}"))

    def _resolve(self, key: str, reason: str) -> None:
        fut = self.ends[key]
        if not fut.done():
            fut.set_result(End(reason, time.monotonic() - self.t0))

    def check_now(self, key: str) -> None:
        """Resolve ``key`` if its row already shows an end (it ended before the watch)."""
        view = self.cluster.proc(key)
        if key in self.ends and view is not None and view.state in ENDED_STATES:
            self._resolve(key, view.reason)

    async def wait(self, keys: Iterable[str], timeout: float) -> dict[str, End]:
        """The ends of ``keys`` that came within ``timeout`` seconds of the watch's start."""
        pending = [self.ends[k] for k in keys if k in self.ends]
        left = max(0.0, timeout - (time.monotonic() - self.t0))
        if pending and not all(f.done() for f in pending):
            await asyncio.wait(pending, timeout=left)
        return {k: f.result() for k, f in self.ends.items() if f.done()}

    def close(self) -> None:
        self._unsubscribe()
        for fut in self.ends.values():
            fut.cancel()
