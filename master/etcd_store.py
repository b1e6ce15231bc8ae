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
from corral.master.tickets import Job, StoreError

JOBS = "/corral/jobs/"
NEXT = JOBS + "next"
OPEN = JOBS + "open/"
ENDED = JOBS + "ended/"

_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(Job)


def _id(job_id: int) -> str:
    return f"{job_id:012d}"


class EtcdTicketStore:
    """Tickets in etcd, written only while ``term`` is the election key's revision."""

    def __init__(self, etcd: SyncEtcd, term: int, aio: Etcd | None = None) -> None:
        self.etcd = etcd
        self.aio = aio  # submits: written together, one transaction for all that wait
        self.term = term
        self._waiting: list[tuple[Job, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None
        try:
            found = etcd.get(NEXT)
        except EtcdError as e:
            raise StoreError(f"cannot read the jobs from etcd: {e}") from None
        self._next = int(found[0].value) if found else 1

    def close(self) -> None:
        """Nothing to let go: the client belongs to the master."""

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
        self._waiting.append((job, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())
        return await done

    async def _write_waiting(self) -> None:
        assert self.aio is not None
        while self._waiting:
            batch, self._waiting = self._waiting, []
            first = self._next
            for i, (job, _) in enumerate(batch):
                job.id = first + i
            ops: list[dict[str, Any]] = [put_op(NEXT, str(first + len(batch)).encode())]
            ops += [put_op(OPEN + _id(job.id), _encode.encode(job)) for job, _ in batch]
            try:
                reply = await self.aio.call(
                    "kv/txn", {"compare": [term_compare(self.term)], "success": ops}
                )
                why = "" if reply.get("succeeded") else f"term {self.term} is over"
            except EtcdError as e:
                why = f"cannot write the jobs to etcd: {e}"
            if not why:
                self._next = first + len(batch)
            for job, done in batch:
                if done.done():
                    continue
                if why:
                    done.set_exception(StoreError(f"not written: {why}"))
                else:
                    done.set_result(job.id)

    def save(self, *jobs: Job) -> None:
        """Write ``jobs`` whole, in one transaction; an ended one moves to ``ended/``."""
        ops: list[dict[str, object]] = []
        for job in jobs:
            key = _id(job.id)
            if job.ended:
                ops += [delete_op(OPEN + key), put_op(ENDED + key, _encode.encode(job))]
            else:
                ops.append(put_op(OPEN + key, _encode.encode(job)))
        if ops:
            self._write(ops)

    def _read(self, prefix: str, limit: int = 0, descend: bool = False) -> list[Job]:
        try:
            found = self.etcd.get(prefix, prefix=True, limit=limit, descend=descend)
        except EtcdError as e:
            raise StoreError(f"cannot read the jobs from etcd: {e}") from None
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
