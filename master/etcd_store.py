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

import msgspec

from corral.master.etcd import EtcdError, SyncEtcd, delete_op, put_op, term_compare
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

    def __init__(self, etcd: SyncEtcd, term: int) -> None:
        self.etcd = etcd
        self.term = term
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
