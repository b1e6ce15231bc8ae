"""The event log's recent part in etcd, for masters run with ``--etcd``.

Each master keeps its whole event log in its own state dir (`master.events`).
The leader also writes what it notes to etcd, so the cluster's recent
history outlives it: a new leader reads it back into its events pane, and
every master's ``GET /v1/events`` shows it beside its own log.  That
includes the deploys (``app.deployed``, ``app.deploy_failed``: app, node,
what was sent) and the jobs' moves.

Keys (under ``/corral/events/``): ``SEQ`` zero-padded, a JSON `Event`.
Only the last `KEEP` are kept: each write deletes what fell out.  Writes
are transactions guarded by the leader's term, sent by one writer that
gathers what was noted for a quarter of a second.  They are best effort,
as the local log is the record: an etcd that is slow or down holds up
nothing, a batch it refused is dropped, and past `BACKLOG` events waiting
the oldest are dropped too (the local log keeps them).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import msgspec

from corral.master.etcd import Etcd, EtcdError, put_op, range_body, term_compare
from corral.master.etcd import b64 as _b64
from corral.master.etcd import kvs as _kvs
from corral.master.model import Event

log = logging.getLogger("corral.master")

EVENTS = "/corral/events/"
KEEP = 1000  # events kept in etcd (the events pane's ring holds as many)
BACKLOG = 5000  # events waiting for etcd past this: the oldest are dropped
BATCH = 100  # events a transaction (etcd takes at most 128 operations)
GATHER = 0.25  # seconds events gather before a write: the ticket writes go first

_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Event)


def _key(seq: int) -> str:
    return f"{EVENTS}{seq:016d}"


class EtcdEvents:
    """Writes the leader's events to etcd; reads the recent ones back."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.term = 0  # writing for this term; 0: not leading, nothing is written
        self._next = 0  # the next event's sequence number
        self._waiting: deque[Event] = deque(maxlen=BACKLOG)
        self._writer: asyncio.Task[None] | None = None
        self._taking = False

    def take_up(self, term: int) -> Coroutine[Any, Any, list[Event]]:
        """Lead ``term``: await it for the events kept so far, oldest first.

        What is noted from this call on is written, after the read.
        EtcdError if etcd cannot be read (nothing is written for this term then).
        """
        self.term, self._taking = 0, True
        self._waiting.clear()
        return self._read_back(term)

    async def _read_back(self, term: int) -> list[Event]:
        try:
            found = _kvs(await self.etcd.call("kv/range", range_body(EVENTS, True, 1, True)))
            self._next = int(found[0].key.removeprefix(EVENTS)) + 1 if found else 1
            events = await self.recent(KEEP)
        except (EtcdError, ValueError):
            self.stand_by()
            raise
        if not self._taking:  # stood by meanwhile
            return events
        self.term, self._taking = term, False
        self._kick()
        return events

    def stand_by(self) -> None:
        """No longer leading: write nothing more (an old term's writes would be refused)."""
        self.term, self._taking = 0, False
        self._waiting.clear()

    def append(self, event: Event) -> None:
        if self.term or self._taking:
            self._waiting.append(event)
            if self.term:
                self._kick()

    async def recent(self, limit: int) -> list[Event]:
        """The last ``limit`` events in etcd, oldest first (EtcdError if it cannot be read)."""
        reply = await self.etcd.call("kv/range", range_body(EVENTS, True, min(limit, KEEP), True))
        out = []
        for kv in reversed(_kvs(reply)):
            try:
                out.append(_decode.decode(kv.value))
            except msgspec.DecodeError:
                continue  # not ours to fail on
        return out

    async def close(self) -> None:
        self.stand_by()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    def _kick(self) -> None:
        if self._waiting and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        # A write a quarter of a second, whatever the rate of events: etcd syncs
        # each transaction to disk in turn, and a submit waiting for its ticket's
        # write should not wait behind an event's too.
        await asyncio.sleep(GATHER)
        while self._waiting and self.term:
            term, first = self.term, self._next
            batch = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
            ops = [put_op(_key(first + i), _encode.encode(ev)) for i, ev in enumerate(batch)]
            last = first + len(batch)
            if last > KEEP:  # what falls out of the last KEEP goes in the same write
                end = _b64(_key(last - KEEP))
                ops.append({"requestDeleteRange": {"key": _b64(EVENTS), "range_end": end}})
            try:
                reply = await self.etcd.txn([term_compare(term)], ops)
            except EtcdError as e:  # the rest wait for the next event's write
                log.info("%d events not written to etcd: %s", len(batch), e)
                return
            if not reply.get("succeeded"):
                self.stand_by()  # another master leads: its events are its own
                return
            if self.term == term:
                self._next = last
