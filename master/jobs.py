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
                ``ROOT/apps/APP/jobs/ID/INDEX``
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
    StoreError,
    TicketStore,
    derive,
)
from corral.transport.connection import CallError, CallRefused
from corral.transport.messages import ALIVE_STATES, Launch, Launched, valid_app_name

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
_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,64}")

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

    def _save(self, jobs: Iterable[Job]) -> bool:
        """Write ``jobs`` to the store (one transaction) and forget those that ended.

        False if the store refused (etcd: this master's term is over).
        """
        jobs = list(jobs)
        if not jobs:
            return True
        if not self.master.acting:
            # Not leading (etcd): the write would be refused, or hang on an etcd that is
            # down. A new term reads the tickets back and the workers tell the rest.
            return False
        if self.store is not None:
            try:
                self.store.save(*jobs)
            except StoreError as e:
                self.cluster.note("jobs.unsaved", "", str(e))
                return False
        for job in jobs:
            if job.ended and self.open.pop(job.id, None) is not None:
                for rep in job.replicas:
                    self._targets.pop(rep.target, None)
                    self._interrupted.discard(rep.key)
        return True

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
    ) -> Job:
        """Queue a job and place what fits now; its ticket.  VerbError, nothing stored, if bad."""
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
        demand = Demand(0, count, mem, spread)
        if never := self.sched.never_fits(demand):
            raise VerbError(never)
        job = Job(
            id=0,
            name=name,
            app=app,
            argv=list(argv),
            count=count,
            mem=mem,
            spread=spread,
            outputs=globs,
            submitted_at=time.time(),
            replicas=[Replica(index=i) for i in range(count)],
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
        if not self._save(jobs):
            return
        for job in jobs:
            where = ", ".join(sorted(set(r.node for r in job.replicas)))
            self.cluster.note("job.started", "", f"job {job.id} ({job.name}) placed on {where}")
            self._spawn(self._launch_all(job, job.replicas))
        ids = {job.id for job in jobs} | set(self.sched.queue)
        self._publish(ids)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch_all(self, job: Job, reps: Sequence[Replica]) -> None:
        await asyncio.gather(*(self._launch(job, rep) for rep in reps))
        self._settle(job)

    async def _launch(self, job: Job, rep: Replica) -> None:
        if job.cancelled:
            self._release(job, rep)
            rep.state, rep.reason, rep.ended_at = (
                NOT_RUN,
                "cancelled before it started",
                time.time(),
            )
            return
        try:
            link = self.master.link(rep.node)
        except VerbError as e:
            rep.reason = f"not launched yet: {e}"
            return  # launched when the node registers again (reconcile)
        workdir = job.workdir(rep.index)

        def ask(i: int) -> Launch:
            return Launch(id=i, app=job.app, argv=job.argv, key=rep.key, workdir=workdir)

        for attempt in range(LAUNCH_ATTEMPTS):
            try:
                reply = await link.call(ask, Launched)
                break
            except CallRefused as e:
                self._release(job, rep)
                rep.state, rep.reason = LAUNCH_FAILED, f"launch failed: {e}"
                rep.ended_at = time.time()
                return
            except CallError as e:
                # Unknown whether it started.  Asking again with the same key
                # starts it at most once; with the node gone, it is asked by
                # its key when the node registers again (`_reconcile`).
                rep.reason = f"launch not confirmed ({e}); asked again when {rep.node} reports"
                if link.closed or attempt == LAUNCH_ATTEMPTS - 1:
                    return
        self._attach(job, rep, reply.proc.pid)
        self.cluster.update_proc(rep.node, reply.proc)
        view = self.cluster.proc(rep.target)
        if view is not None:
            self._follow(job, rep, view)

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

    # --- cancel ----------------------------------------------------------------------
    async def cancel(self, ids: Sequence[int]) -> list[Job]:
        """Cancel jobs: a queued one leaves the queue, a running one gets SIGINT everywhere.

        Every id is checked first: an unknown or ended job fails the verb
        and cancels nothing.
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
        for job in jobs:
            self._settle(job)
        self._flush()  # the reply's tickets say cancelled
        if signals:
            await self.master.signal(signals, "SIGINT")
        self._publish(set(self.sched.queue))
        return jobs
