"""Job tickets in etcd: the `TicketStore` interface, for masters run with ``--etcd``.

Keys (under ``/corral/jobs/``)::

    next            the id the next job gets (ids only grow: the queue's order)
    open/ID         a ticket not ended (msgpack `Job`), ID zero-padded
    ended/ID        an ended one

Every write is one transaction guarded by the leader's term (the election
key's create revision): once another master has won, a write of the old
leader changes nothing and raises `StoreError`.  A new leader reads the
open tickets, oldest first, and takes up the queue where the last one
left it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from corral.master.etcd import Etcd, EtcdError, SyncEtcd, delete_op, put_op, term_compare
from corral.master.tickets import Job, StoreError, gc_paused

JOBS = "/corral/jobs/"
NEXT = JOBS + "next"
OPEN = JOBS + "open/"
ENDED = JOBS + "ended/"

Op = dict[str, Any]  # one operation of a transaction, as etcd's gateway takes it

_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(Job)


def _id(job_id: int) -> str:
    return f"{job_id:012d}"


# etcd refuses a transaction of more than 128 operations (--max-txn-ops) or
# 1.5 MiB (--max-request-bytes): one write stays well inside both.
TXN_OPS = 120
TXN_BYTES = 1 << 20


class EtcdTicketStore:
    """Tickets in etcd, written only while ``term`` is the election key's revision.

    With an async client (``aio``) the writes the loop makes meanwhile go
    out together: new jobs and changed tickets wait in one queue and one
    writer sends them, in as few transactions as etcd takes, one at a time
    (so ids, and a ticket saved twice, are written in the order of the
    calls).  A slow or stalled etcd holds up the callers that need the
    write, never the master's loop.  A new leader takes up ids after the
    largest it finds, should the ``next`` key ever lag behind them.
    """

    def __init__(self, etcd: SyncEtcd, term: int, aio: Etcd | None = None) -> None:
        self.etcd = etcd
        self.aio = aio
        self.term = term
        self._adds: list[tuple[Job, asyncio.Future[int]]] = []
        self._dirty: dict[int, Job] = {}  # saved, not written yet; the latest state is sent
        self._saves: list[asyncio.Future[None]] = []  # callers waiting for the dirty ones
        self._writer: asyncio.Task[None] | None = None
        try:
            found = etcd.get(NEXT)
            last = [etcd.get(p, prefix=True, limit=1, descend=True) for p in (OPEN, ENDED)]
        except EtcdError as e:
            raise StoreError(f"cannot read the jobs from etcd: {e}") from None
        ids = [int(kvs[0].key.rpartition("/")[2]) for kvs in last if kvs]
        self._next = max([int(found[0].value) if found else 1, *(i + 1 for i in ids)])

    @property
    def writes_later(self) -> bool:
        """Whether callers on the loop should use `save_async` (the write is a round trip)."""
        return self.aio is not None

    def close(self) -> None:
        """Stop the write in flight (its callers get StoreError); the client is the master's."""
        if self._writer is not None:
            self._writer.cancel()

    def _write(self, ops: list[dict[str, object]]) -> None:
        try:
            done = self.etcd.txn([term_compare(self.term)], ops)
        except EtcdError as e:
            raise StoreError(f"cannot write the jobs to etcd: {e}") from None
        if not done:
            raise StoreError(f"not written: term {self.term} is over (another master leads)")

    def next_id(self) -> int:
        return self._next

    def add(self, job: Job) -> int:
        """Store a new job; its id (the ``id`` given is ignored)."""
        job.id = self._next
        self._write(
            [
                put_op(NEXT, str(job.id + 1).encode()),
                put_op(OPEN + _id(job.id), _encode.encode(job)),
            ]
        )
        self._next = job.id + 1
        return job.id

    async def add_async(self, job: Job) -> int:
        """`add`, without holding up the loop; submits that arrive meanwhile share one write.

        Ids follow the order of the calls, so the queue's order is the
        submission order.  StoreError as `add`.
        """
        if self.aio is None:
            return self.add(job)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._adds.append((job, done))
        self._kick()
        return await done

    def save(self, *jobs: Job) -> None:
        """Write ``jobs`` whole, in one transaction; an ended one moves to ``ended/``."""
        ops = [op for job in jobs for op in _save_ops(job)]
        if ops:
            self._write(ops)

    async def save_async(self, *jobs: Job) -> None:
        """`save`, without holding up the loop; returns once ``jobs`` are in etcd.

        Saves made meanwhile share the write.  StoreError as `save`.
        """
        if self.aio is None:
            self.save(*jobs)
            return
        if not jobs:
            return
        for job in jobs:
            self._dirty[job.id] = job
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._saves.append(done)
        self._kick()
        await done

    def _kick(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        """Send what waits, a transaction at a time, until nothing does.

        A new task runs after the callbacks ready when it was made: the
        submitters woken by one answer have all queued their next job by
        the time the first batch is taken.
        """
        assert self.aio is not None
        while self._adds or self._dirty:
            adds, waiters, ops = self._take_batch()
            self._next += len(adds)  # taken, whether or not the write succeeds
            why = "the store was closed"
            try:
                reply = await self.aio.txn([term_compare(self.term)], ops)
                why = "" if reply.get("succeeded") else f"term {self.term} is over"
            except EtcdError as e:
                why = f"cannot write the jobs to etcd: {e}"
            finally:  # cancelled too: nobody is left waiting
                error = StoreError(f"not written: {why}") if why else None
                for job, added in adds:
                    _answer(added, job.id, error)
                for saved in waiters:
                    _answer(saved, None, error)

    def _take_batch(
        self,
    ) -> tuple[list[tuple[Job, asyncio.Future[int]]], list[asyncio.Future[None]], list[Op]]:
        """The next transaction: new jobs first (ids in call order), then saved tickets.

        At most `TXN_OPS` operations and, past the first, `TXN_BYTES` of
        tickets.  The callers of `save_async` are answered by the
        transaction that writes the last dirty ticket (one save's tickets
        may span two).
        """
        adds: list[tuple[Job, asyncio.Future[int]]] = []
        ops: list[Op] = [put_op(NEXT, b"")]  # the counter, filled in below
        size, taken = 0, 0

        def room(more: int) -> bool:  # the first ticket always goes
            return not taken or (len(ops) + more <= TXN_OPS and size < TXN_BYTES)

        while self._adds and room(1):
            taken += 1
            job, added = self._adds.pop(0)
            job.id = self._next + len(adds)
            adds.append((job, added))
            ticket = _encode.encode(job)
            ops.append(put_op(OPEN + _id(job.id), ticket))
            size += len(ticket)
        if adds:
            ops[0] = put_op(NEXT, str(self._next + len(adds)).encode())
        else:
            ops.clear()
        while self._dirty and room(2):
            taken += 1
            job = self._dirty.pop(next(iter(self._dirty)))
            more = _save_ops(job)
            ops += more
            size += sum(len(op["requestPut"]["value"]) for op in more if "requestPut" in op)
        waiters: list[asyncio.Future[None]] = []
        if not self._dirty:
            waiters, self._saves = self._saves, []
        return adds, waiters, ops

    def _read(self, prefix: str, limit: int = 0, descend: bool = False) -> list[Job]:
        try:
            found = self.etcd.get(prefix, prefix=True, limit=limit, descend=descend)
        except EtcdError as e:
            raise StoreError(f"cannot read the jobs from etcd: {e}") from None
        with gc_paused():
            return [_decode.decode(kv.value) for kv in found]

    def open_jobs(self) -> list[Job]:
        """Every job not ended, oldest first (the queue's order)."""
        return self._read(OPEN)

    def get(self, job_id: int) -> Job | None:
        for prefix in (OPEN, ENDED):
            try:
                found = self.etcd.get(prefix + _id(job_id))
            except EtcdError as e:
                raise StoreError(f"cannot read the jobs from etcd: {e}") from None
            if found:
                return _decode.decode(found[0].value)
        return None

    def ended(self, limit: int) -> list[Job]:
        """The ``limit`` most recently submitted ended jobs, oldest first."""
        return list(reversed(self._read(ENDED, limit, descend=True)))


def _answer(caller: asyncio.Future[Any], value: Any, error: StoreError | None) -> None:
    """Wake a caller of `add_async` or `save_async` (unless it gave up waiting)."""
    if caller.done():
        return
    if error is None:
        caller.set_result(value)
    else:
        caller.set_exception(error)


def _save_ops(job: Job) -> list[Op]:
    """A ticket written whole; an ended one moves from ``open/`` to ``ended/``."""
    key = _id(job.id)
    if job.ended:
        return [delete_op(OPEN + key), put_op(ENDED + key, _encode.encode(job))]
    return [put_op(OPEN + key, _encode.encode(job))]
