"""The last log lines of each process that ends, fetched once, for its death certificate.

The model hears of an end (a ``proc.ended`` event); `TailKeeper` then asks
the worker for the last `TAIL_LINES` lines of that log, once, and hands them
to `Cluster.set_log_tail`, so they outlive the worker.  A burst of ends is
queued (the newest `MAX_PENDING` kept) and fetched `CONCURRENCY` at a time:
a cluster where programs end all the time costs one small request per end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from corral.master.model import TAIL_LINES, Change, Cluster

log = logging.getLogger("corral.master")

MAX_PENDING = 1000  # ends waiting for their tail (the oldest are dropped past this)
CONCURRENCY = 4  # tails fetched at once
TIMEOUT = 10.0  # seconds one fetch may take


class Piece(Protocol):
    @property
    def data(self) -> bytes: ...


Fetch = Callable[[str, int], Awaitable[Piece]]


class TailKeeper:
    """Fetches the log tail of every process that ends; `close` stops it."""

    def __init__(self, cluster: Cluster, fetch: Fetch) -> None:
        self.cluster = cluster
        self.fetch = fetch
        self._pending: deque[tuple[str, str]] = deque(maxlen=MAX_PENDING)  # (key, launch)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe = cluster.subscribe(self._on_change)
        self._closed = False

    def _on_change(self, change: Change) -> None:
        if self._closed:
            return
        for ev in change.events:
            if ev.kind != "proc.ended" or ev.pid is None:
                continue
            key = f"{ev.node}:{ev.pid}"
            view = self.cluster.proc(key)
            if view is not None:
                self._pending.append((key, view.launch))
        if self._pending and len(self._tasks) < CONCURRENCY:
            try:
                task = asyncio.get_running_loop().create_task(self._drain())
            except RuntimeError:  # no loop (a model driven by hand): nothing to fetch with
                self._pending.clear()
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        while self._pending and not self._closed:
            key, launch = self._pending.popleft()
            try:
                piece = await asyncio.wait_for(self.fetch(key, TAIL_LINES), TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the worker went, the log was removed: say so
                self.cluster.set_log_tail(key, launch, (), error=str(e) or type(e).__name__)
                continue
            text = piece.data.decode("utf-8", errors="replace")
            self.cluster.set_log_tail(key, launch, text.splitlines()[-TAIL_LINES:])

    async def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
