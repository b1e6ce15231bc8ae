"""Jobs: N replicas of a command, placed by memory, queued FIFO, followed by a ticket.

`Jobs` is the master's job plane; the `Master` owns one and starts it
before it accepts workers.  It keeps the open tickets (`master.tickets`)
in memory, the placement book (`master.scheduler`) beside them, and writes
every change of state to the ticket store.  The data flow::

    submit      check -> ticket stored (queued) -> queue tail -> drain
    drain       (on submit, a replica's end, a node joining or coming back,
                a node's offer changing; never on a timer) places jobs
                from the queue's head while they fit, stores the placement
                (each replica's node and launch key) before anything is
                sent, then launches every replica in its working directory
                ``ROOT/apps/APP/jobs/ID/INDEX``: one `LaunchBatch` per node,
                all nodes at once (a job's bundle is first sent once per node
                and unpacked there: `_bundle`, `master.bundles`)
    cluster     process changes move replicas (found by NODE:PID); a node
                that registers is reconciled: a replica is found again by
                its launch key, one whose launch never arrived is sent
                again with the same key (the worker starts it at most once)
    cancel      queued: out of the queue; running: SIGINT to every replica

A job's state follows from its replicas' (`tickets.derive`).  Views
subscribe with `subscribe` and are called with the ids of jobs whose
state, replicas or queue position changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from corral.master import bundles
from corral.master.config import ConfigError, load_keep_workdirs
from corral.master.errors import VerbError
from corral.master.etcd_store import EtcdTicketStore
from corral.master.model import Change, ProcView
from corral.master.scheduler import Demand, Scheduler
from corral.master.text import human_bytes
from corral.master.tickets import (
    LAUNCH_FAILED,
    LAUNCHING,
    NOT_RUN,
    PENDING,
    Job,
    Replica,
    Step,
    StoreError,
    TicketStore,
    derive,
    gc_paused,
)
from corral.transport import sftp
from corral.transport.connection import CallError, CallRefused
from corral.transport.messages import (
    ALIVE_STATES,
    MAX_BATCH,
    LaunchBatch,
    LaunchedBatch,
    LaunchItem,
    Purge,
    Removed,
    Unpack,
    UnpackReply,
    valid_app_name,
)

if TYPE_CHECKING:
    from corral.master.control import Master

log = logging.getLogger("corral.master")

MAX_REPLICAS = 10_000
MAX_MEM = 1 << 50  # a petabyte a replica: anything more is a typo
DEFAULT_MEM = 100 * 1024 * 1024
MAX_OUTPUTS = 256
MAX_NAME = 64
ENDED_SHOWN = 10_000  # ended jobs `jobs --all` lists, newest
LAUNCH_ATTEMPTS = 2  # a launch whose reply was lost is asked again (same key) once
RETAIN_TICK = 10.0  # seconds between reads of [jobs] keep_workdirs (and purges past it)
UNPACK_TIMEOUT = 900.0  # seconds a worker may take to unpack a bundle (2 GiB by default)
_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
# What each replica is told of its place in the job; not the submitter's to set.
JOB_ENV = ("CORRAL_JOB", "CORRAL_REPLICA", "CORRAL_REPLICAS")

Listener = Callable[[frozenset[int]], None]
Store = TicketStore | EtcdTicketStore


def check_output_glob(glob: str) -> str:
    """A ``--output`` pattern, checked: relative, no ``..``; VerbError otherwise."""
    if not glob or "\0" in glob or len(glob) > 1024:
        raise VerbError(f"bad --output {glob!r}: give a relative file pattern such as out.txt")
    if glob.startswith("/"):
        raise VerbError(f"bad --output {glob!r}: it must be relative to the job's directory")
    if ".." in glob.split("/"):
        raise VerbError(f"bad --output {glob!r}: '..' would leave the job's directory")
    return posixpath.normpath(glob)


class Jobs:
    """The master's jobs: tickets, the queue, placement and the replicas' lives."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.cluster = master.cluster
        self.sched = Scheduler()
        self.open: dict[int, Job] = {}  # jobs not ended, by id (oldest first)
        self.store: Store | None = None
        self._targets: dict[str, tuple[Job, Replica]] = {}  # NODE:PID -> its replica
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._interrupted: set[str] = set()  # keys of cancelled replicas sent SIGINT
        self._unsubscribe: Callable[[], None] | None = None
        self._dirty: dict[int, Job] = {}  # jobs whose replicas moved, settled soon (`_flush`)
        self.bundles = bundles.Sender(master)

    # --- lifecycle ---------------------------------------------------------
    def start(self, path: Path) -> None:
        """Open the ticket store at ``path`` and take up its open jobs (before workers connect).

        `StoreError` if the database cannot be used.
        """
        self.store = TicketStore(path)
        for job in self.store.open_jobs():
            self._adopt(job)
        for name in self.cluster.node_names():
            self._node_moved(name)
        self._unsubscribe = self.cluster.subscribe(self._on_change)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # placement alone (a benchmark): no loop, no retention
        self._spawn(self._retain())

    def take_up(self, store: Store) -> None:
        """A new term (masters on etcd): forget what this master knew, adopt ``store``'s jobs.

        The queue comes back in submission order; replicas are found again
        by their launch keys as their nodes register (or now, for nodes
        still connected).  `StoreError` if the store cannot be read.
        """
        jobs = store.open_jobs()
        for task in list(self._tasks):
            task.cancel()
        self.store = store
        self.sched = Scheduler()
        self.open.clear()
        self._targets.clear()
        self._interrupted.clear()
        self._dirty = {}
        for job in jobs:
            self._adopt(job)
        for name in self.cluster.node_names():
            self._node_moved(name)
        if self._unsubscribe is None:
            self._unsubscribe = self.cluster.subscribe(self._on_change)
        for name in self.cluster.node_names():
            if self.cluster.node_state(name) in ("alive", "suspect"):
                for job in self._reconcile(name):
                    self._settle(job)
        self._drain()
        self._publish(self.open)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.bundles.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            self.store.close()
            self.store = None

    def _adopt(self, job: Job) -> None:
        """A job found open in the store: its holds, its place in the queue."""
        self.open[job.id] = job
        for rep in job.replicas:
            if rep.holding:
                self.sched.hold(rep.node, job.mem)
                if not rep.reason:
                    rep.reason = f"as last seen; waiting for {rep.node} to report"
            if rep.target:
                self._targets[rep.target] = (job, rep)
        if not job.cancelled and any(r.state == PENDING for r in job.replicas):
            self.sched.enqueue(self._demand(job))

    @staticmethod
    def _demand(job: Job) -> Demand:
        return Demand(job.id, job.count, job.mem, job.spread)

    # --- subscribers ---------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _publish(self, ids: Iterable[int]) -> None:
        moved = frozenset(ids)
        if not moved:
            return
        for listener in list(self._listeners):
            try:
                listener(moved)
            except Exception:  # a view's bug must not stop the jobs
                log.exception("jobs listener failed")

    def _save(self, jobs: Iterable[Job], then: Callable[[], None] | None = None) -> None:
        """Write ``jobs`` (one transaction), forget those that ended, then call ``then``.

        SQLite writes now.  A store that writes in the background (etcd:
        a network round trip and an fsync away) is awaited in a task, so
        the loop goes on meanwhile and ``then`` runs once the write is in.
        Nothing is forgotten and ``then`` never runs when the store refused
        (etcd: this master's term is over) or this master is not acting.
        """
        jobs = list(jobs)
        store = self.store
        if not jobs or store is None:
            return
        if not self.master.acting:
            # Not leading (etcd): the write would be refused, or hang on an etcd that is
            # down. A new term reads the tickets back and the workers tell the rest.
            return
        if store.writes_later:
            self._spawn(self._save_later(store, jobs, then))
            return
        try:
            store.save(*jobs)
        except StoreError as e:
            self.cluster.note("jobs.unsaved", "", str(e))
            return
        self._saved(jobs, then)

    async def _save_later(
        self, store: Store, jobs: list[Job], then: Callable[[], None] | None
    ) -> None:
        try:
            await store.save_async(*jobs)
        except StoreError as e:
            self.cluster.note("jobs.unsaved", "", str(e))
            return
        if store is self.store:  # not a write of a term that has ended meanwhile
            self._saved(jobs, then)

    def _saved(self, jobs: list[Job], then: Callable[[], None] | None) -> None:
        for job in jobs:
            if job.ended and self.open.pop(job.id, None) is not None:
                for rep in job.replicas:
                    self._targets.pop(rep.target, None)
                    self._interrupted.discard(rep.key)
                if job.bundle and not any(j.bundle == job.bundle for j in self.open.values()):
                    bundles.forget(self.master.config.state_dir, job.bundle)
        if then is not None:
            then()

    # --- queries ------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        """The ticket of ``job_id`` (open or ended); VerbError if there is none."""
        job = self.open.get(job_id)
        if job is None and self.store is not None:
            job = self.store.get(job_id)
        if job is None:
            raise VerbError(f"no such job: {job_id}")
        return job

    def jobs(self, ended: bool = False) -> list[Job]:
        """Open jobs, oldest first; with ``ended`` the most recent ended ones before them."""
        out = list(self.open.values())
        if ended and self.store is not None:
            out = [*self.store.ended(ENDED_SHOWN), *out]
            out.sort(key=lambda j: j.id)
        return out

    def position(self, job_id: int) -> int:
        return self.sched.position(job_id)

    def positions(self) -> dict[int, int]:
        """Every queued job's place in the queue (1: next), worked out at once."""
        return self.sched.positions()

    def reason(self, job: Job) -> str:
        """Why ``job`` waits (queued), or how it failed."""
        if job.state == "queued" and not job.cancelled:
            return self.sched.reason(job.id) or job.reason
        return job.reason

    def held(self, node: str) -> int:
        """Bytes that placed, unfinished replicas hold on ``node``."""
        slot = self.sched.slots.get(node)
        return slot.held if slot is not None else 0

    def tickets(self, jobs: Iterable[Job]) -> list[dict[str, Any]]:
        """`ticket` of each of ``jobs``, the queue's positions worked out once."""
        positions = self.positions()
        with gc_paused():
            return [self.ticket(job, positions.get(job.id, 0)) for job in jobs]

    def ticket(self, job: Job, position: int | None = None) -> dict[str, Any]:
        """The ticket in its JSON shape, with the live figures of running replicas."""
        out: dict[str, Any] = msgspec.to_builtins(job)
        out["running"] = job.running
        if position is None:
            position = self.position(job.id)
        out["position"] = position if job.state == "queued" else 0
        out["reason"] = self.reason(job)
        for rep, row in zip(job.replicas, out["replicas"], strict=True):
            view = self.cluster.proc(rep.target) if rep.target else None
            if view is not None and view.alive:
                row.update(cpu_user=view.cpu_user, cpu_sys=view.cpu_sys, max_rss=view.max_rss)
            row["target"] = rep.target
        return out

    def preview(self, count: int, mem: int, spread: bool) -> tuple[list[str], str]:
        """Where a job would go if submitted now: its nodes, or why it would wait."""
        demand = Demand(0, count, mem, spread)
        if never := self.sched.never_fits(demand):
            return [], never
        if self.sched.queue:
            return [], f"would wait behind job {next(iter(self.sched.queue))}"
        nodes = self.sched.try_place(demand)
        if nodes is None:
            return [], f"would wait: {self.sched.needs(demand)}; {self.sched.breakdown(demand)}"
        return nodes, ""

    # --- submit ---------------------------------------------------------------
    async def submit(
        self,
        argv: Sequence[str],
        count: int = 1,
        mem: int = DEFAULT_MEM,
        spread: bool = False,
        app: str | None = None,
        name: str | None = None,
        outputs: Sequence[str] = (),
        bundle: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Job:
        """Queue a job and place what fits now; its ticket.  VerbError, nothing stored, if bad.

        ``bundle``: a tar/zip file or a directory on this machine, kept in
        ``STATE_DIR/bundles/`` and unpacked into each replica's directory
        before its command runs (see `master.bundles`).
        """
        if self.store is None:
            raise VerbError("the master is not running")
        if not argv or not argv[0]:
            raise VerbError("nothing to run: give a program after --, e.g. -- ./simulate")
        if not 1 <= count <= MAX_REPLICAS:
            raise VerbError(f"bad --replicas {count}: give 1 to {MAX_REPLICAS}")
        if not 1 <= mem <= MAX_MEM:
            raise VerbError(f"bad --mem {mem}: give a size from 1 byte to {human_bytes(MAX_MEM)}")
        app = app or os.path.basename(argv[0])
        if not valid_app_name(app):
            raise VerbError(f"invalid app name {app!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        name = name or app
        if not _NAME_RE.fullmatch(name):
            raise VerbError(f"bad --name {name!r}: give 1-{MAX_NAME} printable characters")
        if len(outputs) > MAX_OUTPUTS:
            raise VerbError(f"too many --output patterns: at most {MAX_OUTPUTS}")
        globs = [check_output_glob(g) for g in outputs]
        env = env or {}
        if taken_names := sorted(set(env) & set(JOB_ENV)):
            raise VerbError(f"--env {taken_names[0]}: corral sets it for each replica")
        demand = Demand(0, count, mem, spread)
        if never := self.sched.never_fits(demand):
            raise VerbError(never)
        taken = None
        if bundle:
            state_dir = self.master.config.state_dir
            taken = await asyncio.to_thread(bundles.take, state_dir, bundle)
            if not bundles.local_path(state_dir, taken.sha256).exists():
                # A job with the same bundle ended meanwhile and its copy went with it.
                taken = await asyncio.to_thread(bundles.take, state_dir, bundle)
            if self.store is None:  # closed while the bundle was copied
                raise VerbError("the master is not running")
        job = Job(
            id=0,
            name=name,
            app=app,
            argv=list(argv),
            count=count,
            mem=mem,
            spread=spread,
            outputs=globs,
            env=env,
            submitted_at=time.time(),
            replicas=[Replica(index=i) for i in range(count)],
            bundle=taken.sha256 if taken else "",
            bundle_name=taken.name if taken else "",
            bundle_bytes=taken.bytes if taken else 0,
        )
        try:
            await self.store.add_async(job)
        except StoreError as e:
            raise VerbError(str(e)) from None
        if self.store is None:  # closed while it was written
            raise VerbError("the master is not running")
        self.open[job.id] = job
        self.sched.enqueue(self._demand(job))
        self.cluster.note(
            "job.submitted", "", f"job {job.id} ({job.name}) submitted: {self.sched.needs(demand)}"
        )
        self._drain()
        self._publish([job.id])
        return job

    # --- placement and launch ---------------------------------------------------
    def _drain(self) -> None:
        """Place what fits from the head of the queue, store it, then launch it."""
        if not self.master.acting:  # a standby, or a leader whose lease is in doubt
            return
        placed = self.sched.drain()
        if not placed:
            return
        now = time.time()
        jobs = []
        for demand, nodes in placed:
            job = self.open[demand.job]
            job.started_at = now
            job.reason = ""
            for rep, node in zip(job.replicas, nodes, strict=True):
                rep.node, rep.state, rep.reason = node, LAUNCHING, ""
                rep.key = f"job{job.id}.{rep.index}.{os.urandom(4).hex()}"
            job.state, _ = derive(job)
            jobs.append(job)
        # Stored before anything is sent: a master that dies now finds the
        # keys, and asks the workers for them, instead of launching again.
        self._save(jobs, then=lambda: self._launch_placed(jobs))
        self._publish({job.id for job in jobs} | set(self.sched.queue))

    def _launch_placed(self, jobs: list[Job]) -> None:
        for job in jobs:
            where = ", ".join(sorted(set(r.node for r in job.replicas)))
            self.cluster.note("job.started", "", f"job {job.id} ({job.name}) placed on {where}")
            self._spawn(self._launch_all(job, job.replicas))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch_all(self, job: Job, reps: Sequence[Replica]) -> None:
        """Launch ``reps``: one `LaunchBatch` per node (of at most `MAX_BATCH`), all at once."""
        by_node: dict[str, list[Replica]] = {}
        for rep in reps:
            by_node.setdefault(rep.node, []).append(rep)
        batches = [
            group[i : i + MAX_BATCH]
            for group in by_node.values()
            for i in range(0, len(group), MAX_BATCH)
        ]
        await asyncio.gather(*(self._launch(job, batch) for batch in batches))
        self._settle(job)

    def _not_run(self, job: Job, reps: Sequence[Replica]) -> bool:
        """Replicas of a job cancelled before they started: they never will (True)."""
        if not job.cancelled:
            return False
        now = time.time()
        for rep in reps:
            self._release(job, rep)
            rep.state, rep.reason, rep.ended_at = NOT_RUN, "cancelled before it started", now
        return True

    async def _launch(self, job: Job, reps: list[Replica]) -> None:
        """Launch ``reps``, replicas placed on one node, in one request.

        With a bundle, each is first unpacked in its directory (the bundle
        sent to the node once for all of them); only those unpacked launch.
        """
        if self._not_run(job, reps):
            return
        node = reps[0].node
        try:
            link = self.master.link(node)
        except VerbError as e:
            for rep in reps:
                rep.reason = f"not launched yet: {e}"
            return  # launched when the node registers again (reconcile)
        if job.bundle:
            unpacked = await asyncio.gather(*(self._bundle(job, rep, link) for rep in reps))
            reps = [rep for rep, ok in zip(reps, unpacked, strict=True) if ok]
            if not reps or self._not_run(job, reps):
                return
        items = [
            LaunchItem(rep.key, job.workdir(rep.index), {"CORRAL_REPLICA": str(rep.index)})
            for rep in reps
        ]
        env = {**job.env, "CORRAL_JOB": str(job.id), "CORRAL_REPLICAS": str(job.count)}

        def ask(i: int) -> LaunchBatch:
            return LaunchBatch(id=i, app=job.app, argv=job.argv, env=env, items=items)

        for attempt in range(LAUNCH_ATTEMPTS):
            try:
                reply = await link.call(ask, LaunchedBatch)
                break
            except CallRefused as e:
                now = time.time()
                for rep in reps:
                    self._release(job, rep)
                    rep.state, rep.reason, rep.ended_at = LAUNCH_FAILED, f"launch failed: {e}", now
                return
            except CallError as e:
                # Unknown whether they started.  Asking again with the same
                # keys starts each at most once; with the node gone, they are
                # asked by their keys when it registers again (`_reconcile`).
                for rep in reps:
                    rep.reason = f"launch not confirmed ({e}); asked again when {node} reports"
                if link.closed or attempt == LAUNCH_ATTEMPTS - 1:
                    return
        keys = [proc.key for proc in reply.procs]
        if keys != [rep.key for rep in reps]:  # a worker out of step: as if no reply came
            for rep in reps:
                rep.reason = f"launch not confirmed ({node} answered for other launches)"
            return
        for rep, proc in zip(reps, reply.procs, strict=True):
            self._attach(job, rep, proc.pid)
            self.cluster.update_proc(node, proc)
            view = self.cluster.proc(rep.target)
            if view is not None:
                self._follow(job, rep, view)

    async def _bundle(self, job: Job, rep: Replica, link: Any, again: bool = True) -> bool:
        """Send ``job``'s bundle to ``rep``'s node (once per node) and unpack it there.

        True once it is unpacked in the replica's directory.  False when the
        replica failed (its state says why) or must wait for its node to
        register again (a lost connection: `_reconcile` asks again).
        """
        rep.steps = []
        sending = Step(name="sending", started_at=time.time(), total=job.bundle_bytes)
        rep.steps.append(sending)
        self._publish([job.id])

        def watch(done: int, total: int) -> None:
            sending.done, sending.total = done, total
            sending.note = bundles.WAITING_TURN if send.waiting else ""
            self._publish([job.id])

        send = self.bundles.send(rep.node, link, job.bundle, watch)
        assert send.task is not None
        try:
            sent = await asyncio.shield(send.task)
        except CallRefused as e:
            return self._step_failed(job, rep, sending, f"bundle not taken by {rep.node}: {e}")
        except CallError as e:
            sending.note = f"not sent ({e}); sent again when {rep.node} reports"
            rep.reason = sending.note
            return False
        except (sftp.PushError, OSError, VerbError) as e:
            why = f"bundle not sent to {rep.node}: {bundles.error_line(e)}"
            return self._step_failed(job, rep, sending, why)
        finally:
            if watch in send.watchers:
                send.watchers.remove(watch)
        sending.ended_at, sending.sent, sending.done = time.time(), sent, sending.total
        sending.note = "already on the node" if sent == 0 else f"{human_bytes(sent)} sent"
        unpacking = Step(name="unpacking", started_at=time.time())
        rep.steps.append(unpacking)
        self._publish([job.id])
        workdir = job.workdir(rep.index)

        def ask(i: int) -> Unpack:
            return Unpack(id=i, app=job.app, workdir=workdir, sha256=job.bundle, key=rep.key)

        try:
            reply = await link.call(ask, UnpackReply, UNPACK_TIMEOUT)
        except CallRefused as e:
            if again and bundles.NOT_HERE in str(e):  # it held it once: send it again
                self.bundles.forget(link, job.bundle)
                return await self._bundle(job, rep, link, again=False)
            return self._step_failed(job, rep, unpacking, f"bundle refused: {e}")
        except CallError as e:
            unpacking.note = f"not confirmed ({e}); asked again when {rep.node} reports"
            rep.reason = unpacking.note
            return False
        unpacking.ended_at = time.time()
        unpacking.note = f"{reply.files:,} files, {human_bytes(reply.bytes)}"
        if not reply.files and not reply.bytes:
            unpacking.note = "unpacked before"
        rep.reason = ""
        self._publish([job.id])
        return True

    def _step_failed(self, job: Job, rep: Replica, step: Step, why: str) -> bool:
        step.ended_at, step.failed, step.note = time.time(), True, why
        self._release(job, rep)
        rep.state, rep.reason, rep.ended_at = LAUNCH_FAILED, why, time.time()
        return False

    def _attach(self, job: Job, rep: Replica, pid: int) -> None:
        self._targets.pop(rep.target, None)
        rep.pid = pid
        self._targets[rep.target] = (job, rep)

    def _release(self, job: Job, rep: Replica) -> None:
        if rep.holding:
            self.sched.release(rep.node, job.mem)

    def _settle(self, job: Job) -> None:
        """``job``'s replicas moved: settle it soon, with whatever else moves meanwhile.

        The replicas of a job launch and change together; one store write
        and one drain for all of them, once the loop is done with this turn.
        """
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty[job.id] = job

    def _flush(self) -> None:
        """Work out the dirty jobs' states from their replicas, store them, tell, drain."""
        jobs, self._dirty = list(self._dirty.values()), {}
        for job in jobs:
            before = job.state
            job.state, reason = derive(job)
            if job.state != "queued":
                job.reason = reason
            if job.ended and job.ended_at is None:
                ends = [r.ended_at for r in job.replicas if r.ended_at is not None]
                job.ended_at = max(ends) if ends else time.time()
            if job.state != before:
                text = f"job {job.id} ({job.name}) {job.state}"
                why = f": {job.reason}" if job.reason else ""
                self.cluster.note(f"job.{job.state}", "", text + why)
        if self.store is None:  # closed meanwhile
            return
        self._save(jobs)
        self._publish(job.id for job in jobs)
        self._drain()

    # --- the cluster's changes -------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        """Move replicas with their processes; a node that joined or moved may free room."""
        targets = self._targets
        touched: dict[int, Job] = {}
        if targets:
            for key in change.procs:
                found = targets.get(key)
                if found is None:
                    continue
                view = self.cluster.proc(key)
                if view is not None and self._follow(found[0], found[1], view):
                    touched[found[0].id] = found[0]
        for event in change.events:  # a registration: its replicas are looked for again
            if event.kind in ("node.joined", "node.back"):
                touched.update((j.id, j) for j in self._reconcile(event.node))
        for job in touched.values():
            self._settle(job)
        grew = False
        for name in change.nodes:
            grew |= self._node_moved(name)
        if grew:
            self._drain()

    def _node_moved(self, name: str) -> bool:
        """Tell placement of ``name``'s offer and state; True if that changed (worth a drain).

        Called for every beat: `Scheduler.set_node` returns at once when nothing moved.
        """
        state = self.cluster.node_state(name)
        if state is None:
            self.sched.forget_node(name)
            return False
        return self.sched.set_node(name, self.cluster.mem_offer(name), state)

    def _follow(self, job: Job, rep: Replica, view: ProcView) -> bool:
        """Copy ``view`` (its process now) into ``rep``; True if its state or reason moved."""
        before = (rep.state, rep.reason, rep.ended_at)
        holding = rep.holding
        rep.pid, rep.launch = view.pid, view.launch
        rep.state = view.state
        rep.reason = view.reason or (f"{rep.node} is lost" if view.state == "lost" else "")
        rep.started_at, rep.ended_at, rep.exit_code = view.started_at, view.ended_at, view.exit_code
        rep.cpu_user, rep.cpu_sys, rep.max_rss = view.cpu_user, view.cpu_sys, view.max_rss
        if holding and not rep.holding:
            self.sched.release(rep.node, job.mem)
        elif rep.holding and not holding:
            self.sched.hold(rep.node, job.mem)
        if job.cancelled and view.alive and rep.key not in self._interrupted:
            self._interrupted.add(rep.key)
            self._spawn(self.master.signal([rep.target], "SIGINT"))
        return (rep.state, rep.reason, rep.ended_at) != before

    def _reconcile(self, node: str) -> list[Job]:
        """``node`` registered: find its replicas by launch key; send those it never got."""
        reps = [
            (job, rep)
            for job in self.open.values()
            for rep in job.replicas
            if rep.node == node and not rep.ended and rep.state != PENDING
        ]
        if not reps:
            return []
        views = {v.launch_key: v for v in self.cluster.procs(node) if v.launch_key}
        moved: dict[int, Job] = {}
        resend: dict[int, list[Replica]] = {}
        for job, rep in reps:
            view = views.get(rep.key)
            if view is not None:
                self._attach(job, rep, view.pid)
                if self._follow(job, rep, view):
                    moved[job.id] = job
            elif rep.pid == 0:
                resend.setdefault(job.id, []).append(rep)
            else:
                self._release(job, rep)
                rep.state, rep.ended_at = "unknown", time.time()
                rep.reason = f"{node} no longer knows {rep.target}"
                moved[job.id] = job
        for job_id, again in resend.items():
            self._spawn(self._launch_all(self.open[job_id], again))
        return list(moved.values())

    # --- working directories ----------------------------------------------------------
    async def purge(self, job: Job, reps: Sequence[Replica]) -> dict[int, str]:
        """Remove ``reps``' working directories on their nodes: index -> "" or why not.

        A replica still running keeps its directory.  Once every replica
        of an ended job that started has none, the ticket says ``purged``.
        """
        out: dict[int, str] = {}

        async def one(rep: Replica) -> None:
            if not rep.ended:
                out[rep.index] = "still running: its directory is kept"
                return
            try:
                link = self.master.link(rep.node)
            except VerbError as e:
                out[rep.index] = f"not purged: {e}"
                return
            workdir = job.workdir(rep.index)
            try:
                await link.call(lambda i: Purge(id=i, app=job.app, workdir=workdir), Removed, 60.0)
            except CallError as e:
                out[rep.index] = f"not purged: {e}"
                return
            out[rep.index] = ""

        await asyncio.gather(*(one(r) for r in reps if r.node))
        started = [r for r in job.replicas if r.node]
        if job.ended and all(out.get(r.index) == "" for r in started) and not job.purged:
            job.purged = True
            if self.store is not None:
                try:
                    await self.store.save_async(job)
                except StoreError as e:  # the workspaces are gone all the same
                    self.cluster.note("jobs.unsaved", "", str(e))
        return out

    async def _retain(self) -> None:
        """Purge ended jobs' working directories past ``[jobs] keep_workdirs``, if set."""
        while self.store is not None:
            try:
                keep = load_keep_workdirs(self.master.config.state_dir)
            except ConfigError as e:
                log.warning("%s", e)
                keep = None
            if keep is not None:
                cutoff = time.time() - keep
                for job in self.store.ended(ENDED_SHOWN):
                    if job.purged or job.ended_at is None or job.ended_at > cutoff:
                        continue
                    reps = [r for r in job.replicas if r.node]
                    if reps:
                        await self.purge(job, reps)
            await asyncio.sleep(
                RETAIN_TICK if keep is None else min(RETAIN_TICK, max(0.5, keep / 4))
            )

    # --- cancel ----------------------------------------------------------------------
    async def cancel(
        self, ids: Sequence[int], signalled: dict[int, list[str]] | None = None
    ) -> list[Job]:
        """Cancel jobs: a queued one leaves the queue, a running one gets SIGINT everywhere.

        Every id is checked first: an unknown or ended job fails the verb
        and cancels nothing.  ``signalled``, when given, gets each job's
        NODE:PID targets sent SIGINT (by the time the tickets are read, some
        of them may have ended already).
        """
        if not ids:
            raise VerbError("no job given: expected a job id")
        jobs = []
        for job_id in dict.fromkeys(ids):
            job = self.open.get(job_id)
            if job is None:
                ended = self.store.get(job_id) if self.store is not None else None
                if ended is None:
                    raise VerbError(f"no such job: {job_id}")
                raise VerbError(f"job {job_id} has already ended ({ended.state})")
            if job.cancelled:
                raise VerbError(f"job {job_id} is already cancelled")
            jobs.append(job)
        now = time.time()
        signals = []
        for job in jobs:
            job.cancelled, job.reason = True, "cancelled"
            if self.sched.dequeue(job.id):
                for rep in job.replicas:
                    rep.state, rep.reason, rep.ended_at = NOT_RUN, "cancelled while queued", now
            for rep in job.replicas:
                if rep.state in ALIVE_STATES and rep.target:
                    self._interrupted.add(rep.key)
                    signals.append(rep.target)
                    if signalled is not None:
                        signalled.setdefault(job.id, []).append(rep.target)
        for job in jobs:
            self._settle(job)
        self._flush()  # the reply's tickets say cancelled
        if signals:
            await self.master.signal(signals, "SIGINT")
        self._publish(set(self.sched.queue))
        return jobs
