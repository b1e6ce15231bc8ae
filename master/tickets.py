"""Job tickets: the records of jobs and their replicas, and their SQLite home.

A ticket is a `Job` with its `Replica` list.  The master keeps the open
ones (queued, or with a replica not yet ended) in memory and writes every
change of state here, in ``STATE_DIR/jobs.db`` (stdlib ``sqlite3`` in WAL
mode), so a restarted master finds the same jobs, in the same queue order
(job ids grow with submission), with the same replicas: those it had sent
a launch for carry the launch's request key, which the worker reports with
the process, and nothing is launched twice.

Job states::

    queued     not placed yet (every replica ``pending``)
    running    placed; no replica has failed
    succeeded  every replica exited 0
    failed     a replica could not launch, exited non-zero, was killed or
               lost (its node stopped answering); the ticket says which
    cancelled  cancelled by the operator (queued: never ran; running: SIGINT)

A job's state follows from its replicas' (`derive`), so a lost node that
comes back with the replica still running puts the job back to running.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec

from corral.transport.messages import ALIVE_STATES

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ENDED_JOB_STATES = ("succeeded", "failed", "cancelled")
# Replica states besides the process states: not placed yet; placed, its
# launch sent but not confirmed; its launch refused; never to run.
PENDING, LAUNCHING, LAUNCH_FAILED, NOT_RUN = "pending", "launching", "failed", "cancelled"
HOLDING = (LAUNCHING, *ALIVE_STATES, "lost")  # replica states that hold their node's memory


class Step(msgspec.Struct, kw_only=True):
    """A step a replica went through before its process: ``sending`` its bundle, ``unpacking``.

    ``done``/``total``: bytes of a send (``done`` of ``total`` sent so far;
    ``sent`` the bytes that really went, 0 when the node had the bundle);
    ``note``: how it ended ("1,204 files, 3.1M", "refused: ...").
    """

    name: str
    started_at: float
    ended_at: float | None = None
    done: int = 0
    total: int = 0
    sent: int = 0
    note: str = ""
    failed: bool = False


class Replica(msgspec.Struct, kw_only=True):
    """One replica of a job: where it runs and how it went."""

    index: int
    state: str = PENDING
    node: str = ""
    pid: int = 0
    launch: str = ""  # the worker's launch id (the log's name)
    key: str = ""  # the launch's request key, set when it is placed
    reason: str = ""  # how it ended, or why it failed or waits
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    max_rss: int = 0
    steps: list[Step] = []  # with a bundle: sending, unpacking (then its process runs)

    @property
    def target(self) -> str:
        """``NODE:PID`` once it has a process; "" before."""
        return f"{self.node}:{self.pid}" if self.node and self.pid else ""

    @property
    def holding(self) -> bool:
        """Whether it holds memory on its node (placed and not ended)."""
        return bool(self.node) and self.state in HOLDING

    @property
    def failed(self) -> bool:
        s = self.state
        return s in ("killed", "unknown", "lost", LAUNCH_FAILED) or (
            s == "exited" and self.exit_code != 0
        )

    @property
    def ended(self) -> bool:
        return self.state in ("exited", "killed", "unknown", LAUNCH_FAILED, NOT_RUN)


class Job(msgspec.Struct, kw_only=True):
    """A job's ticket."""

    id: int
    name: str
    app: str
    argv: list[str]
    count: int  # replicas asked for
    mem: int  # bytes per replica
    spread: bool = False
    outputs: list[str] = []
    env: dict[str, str] = {}  # laid over each worker's own, under corral's (jobs.JOB_ENV)
    submitted_at: float
    started_at: float | None = None  # when its replicas were placed
    ended_at: float | None = None
    cancelled: bool = False
    state: str = "queued"
    reason: str = ""  # why it failed or waits, in a line
    replicas: list[Replica] = []
    bundle: str = ""  # sha256 of its bundle (STATE_DIR/bundles/SHA256), "" without one
    bundle_name: str = ""
    bundle_bytes: int = 0
    purged: bool = False  # its working directories were removed on the nodes

    @property
    def ended(self) -> bool:
        """Nothing more will happen to it: its state is final and no replica still runs."""
        return self.state in ENDED_JOB_STATES and all(
            r.ended or r.state == PENDING for r in self.replicas
        )

    @property
    def running(self) -> int:
        return sum(1 for r in self.replicas if r.state in ALIVE_STATES)

    def workdir(self, index: int) -> str:
        """The replica's working directory, relative to its app's: ``jobs/ID/INDEX``."""
        return f"jobs/{self.id}/{index}"


def derive(job: Job) -> tuple[str, str]:
    """The job's state and reason, from its replicas."""
    reps = job.replicas
    if job.cancelled:
        return "cancelled", job.reason or "cancelled"
    if any(r.state == PENDING for r in reps):
        return "queued", job.reason
    bad = [r for r in reps if r.failed]
    if bad:
        r = bad[0]
        where = f"{r.target or r.node or 'replica'}"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return "failed", f"replica {r.index} on {where}: {r.reason or r.state}{more}"
    if reps and all(r.state == "exited" for r in reps):
        return "succeeded", ""
    return "running", ""


# --------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    open INTEGER NOT NULL,          -- 1 until the job has ended
    state TEXT NOT NULL,
    ticket BLOB NOT NULL            -- the Job, replicas and all (msgpack)
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (open) WHERE open = 1;
"""

_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(Job)


class StoreError(Exception):
    """The job database cannot be used; the message names it and why."""


class TicketStore:
    """``jobs.db``: every ticket, one row each, written whole at each change.

    A ticket is small (hundreds of bytes) and changes a few times in its
    life, so whole rows keep reads and writes one statement each.
    """

    writes_later = False  # `save` is done when it returns (see the etcd store)

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            path.chmod(0o600)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed row
            self.db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot use the job database {path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def next_id(self) -> int:
        """The id the next job will get (ids only grow, even past deleted rows)."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        return (row[0] if row else 0) + 1

    def add(self, job: Job) -> int:
        """Store a new job (one transaction); its id (the ``id`` given is ignored)."""
        with self._transaction():
            cur = self.db.execute(
                "INSERT INTO jobs (open, state, ticket) VALUES (1, ?, x'')", (job.state,)
            )
            job_id = cur.lastrowid
            assert job_id is not None
            job.id = job_id
            self.db.execute(
                "UPDATE jobs SET ticket = ? WHERE id = ?", (_encode.encode(job), job_id)
            )
        return job_id

    async def add_async(self, job: Job) -> int:
        """`add`, for callers on the loop (the etcd store's is truly asynchronous)."""
        return self.add(job)

    def save(self, *jobs: Job) -> None:
        """Write ``jobs`` whole, in one transaction."""
        rows = [(0 if j.ended else 1, j.state, _encode.encode(j), j.id) for j in jobs]
        with self._transaction():
            self.db.executemany(
                "UPDATE jobs SET open = ?, state = ?, ticket = ? WHERE id = ?", rows
            )

    async def save_async(self, *jobs: Job) -> None:
        """`save`, for callers on the loop (the etcd store's is truly asynchronous)."""
        self.save(*jobs)

    def open_jobs(self) -> list[Job]:
        """Every job not ended, oldest first (the queue's order)."""
        rows = self.db.execute("SELECT ticket FROM jobs WHERE open = 1 ORDER BY id")
        with gc_paused():
            return [_decode.decode(r[0]) for r in rows]

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute("SELECT ticket FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _decode.decode(row[0])

    def ended(self, limit: int) -> list[Job]:
        """The ``limit`` most recently submitted ended jobs, oldest first."""
        rows = self.db.execute(
            "SELECT ticket FROM jobs WHERE open = 0 ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        with gc_paused():
            return [_decode.decode(r[0]) for r in reversed(rows)]

    def _transaction(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    """BEGIN ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for building many small objects at once.

    Each 700 containers made start a collection, and every tenth of those
    (of the older ones in turn) walks the whole heap, the open jobs too: a
    master reading 10,000 jobs back from its store took 0.155 s with the
    collector on, 0.087 s with it off, and its ``GET /v1/jobs`` turned
    10,000 jobs into JSON-ready dicts in 0.22 s against 0.083 s.  What is
    built here holds no cycles; the collector runs again as before once
    the block ends.  Only for code that does not await: other tasks would
    run without the collector too.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
