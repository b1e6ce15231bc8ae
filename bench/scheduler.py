"""Job placement alone: replicas placed per second, and a queue re-evaluated on a release.

(a) Throughput.  1,000 simulated nodes offering 4-64 GiB, 10,000 jobs of
1-8 replicas (256 MiB to 6 GiB each, one in ten ``spread``; seeded) queued
at once.  The queue is drained; then the oldest placed jobs end (their
memory is released, untimed) and it is drained again, until every job has
been placed.  Figure: replicas placed per second of `Scheduler.drain`.
Reference, same run: a naive best fit (for each replica, a scan of all
1,000 nodes for the one with the least room that fits) driven through the
same scenario; its placements must be the same, replica for replica.

(b) Re-evaluation.  The cluster full and a long queue (10,000 jobs) whose
head does not fit; in each trial a placed replica ends (`release`) and the
queue is re-evaluated (`drain`), placing what now fits.  Figure: p99 of
release + drain over the trials.  Reference: the naive best fit on the
same trials.

(c) The same placements through `Jobs` (a real, unstarted `Master`'s job
plane with its SQLite ticket store; launches not sent): replicas submitted
and placed per second, each job stored before and after its placement.
Reported beside (a), no target of its own.
"""

from __future__ import annotations

import asyncio
import gc
import random
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench.report import line, pct
from corral.master.scheduler import Demand, Scheduler

NODES = 1000
JOBS = 10_000
TRIALS = 3000
SEED = 12
MiB = 1 << 20
GiB = 1 << 30
TARGET_RATE = 20_000  # replica placements per second
TARGET_P99_MS = 5.0

Placement = tuple[int, tuple[str, ...]]  # job id, a node per replica


class Placer(Protocol):
    def set_node(self, name: str, offer: int, state: str) -> bool: ...
    def enqueue(self, demand: Demand) -> None: ...
    def drain(self) -> list[tuple[Demand, list[str]]]: ...
    def release(self, node: str, mem: int) -> None: ...


class NaiveScheduler:
    """The reference: FIFO, all-or-nothing, best fit by scanning every node for each replica."""

    def __init__(self) -> None:
        self.free: dict[str, int] = {}
        self.queue: OrderedDict[int, Demand] = OrderedDict()

    def set_node(self, name: str, offer: int, state: str) -> bool:
        self.free[name] = offer
        return True

    def enqueue(self, demand: Demand) -> None:
        self.queue[demand.job] = demand

    def release(self, node: str, mem: int) -> None:
        self.free[node] += mem

    def drain(self) -> list[tuple[Demand, list[str]]]:
        placed = []
        while self.queue:
            demand = next(iter(self.queue.values()))
            nodes = self._place(demand)
            if nodes is None:
                break
            del self.queue[demand.job]
            placed.append((demand, nodes))
        return placed

    def _place(self, d: Demand) -> list[str] | None:
        free, mem = self.free, d.mem
        nodes: list[str] = []
        for _ in range(d.replicas):
            used = set(nodes) if d.spread else ()
            best = min(
                ((f, n) for n, f in free.items() if f >= mem and n not in used), default=None
            )
            if best is None:
                for n in nodes:  # all or nothing
                    free[n] += mem
                return None
            free[best[1]] -= mem
            nodes.append(best[1])
        return nodes


def _nodes(rng: random.Random) -> list[tuple[str, int]]:
    return [(f"n{i:04d}", rng.randint(4, 64) * GiB) for i in range(NODES)]


def _demands(rng: random.Random, count: int, first: int = 1) -> list[Demand]:
    out = []
    for job in range(first, first + count):
        mem = rng.choice((256 * MiB, 512 * MiB, 1 * GiB, 2 * GiB, 4 * GiB, 6 * GiB))
        out.append(Demand(job, rng.randint(1, 8), mem, spread=rng.random() < 0.1))
    return out


# --- (a) throughput -------------------------------------------------------------
def _throughput(make: Callable[[], Placer]) -> tuple[float, int, list[Placement]]:
    """Drain seconds, replicas placed, and every placement, over the whole scenario."""
    rng = random.Random(SEED)
    sched = make()
    for name, offer in _nodes(rng):
        sched.set_node(name, offer, "alive")
    for d in _demands(rng, JOBS):
        sched.enqueue(d)
    running: list[tuple[Demand, list[str]]] = []
    placements: list[Placement] = []
    spent = 0.0
    replicas = 0
    rounds = 0
    while True:
        gc.disable()
        t0 = time.perf_counter()
        placed = sched.drain()
        spent += time.perf_counter() - t0
        gc.enable()
        rounds += 1
        for d, nodes in placed:
            replicas += len(nodes)
            placements.append((d.job, tuple(nodes)))
        running.extend(placed)
        if len(placements) == JOBS:
            return spent, replicas, placements
        if not running or rounds > 10 * JOBS:
            raise RuntimeError("the queue stopped moving: a job fits no node")
        # the oldest third of the running jobs end (untimed)
        k = max(1, len(running) // 3)
        done, running = running[:k], running[k:]
        for d, nodes in done:
            for n in nodes:
                sched.release(n, d.mem)


# --- (b) re-evaluation on a release --------------------------------------------------
def _reevaluate(make: Callable[[], Placer]) -> tuple[list[float], int, int]:
    """Seconds of each trial's release + drain; replicas placed; the queue's shortest length."""
    rng = random.Random(SEED + 1)
    sched = make()
    for name, offer in _nodes(rng):
        sched.set_node(name, offer, "alive")
    next_job = 1
    holds: list[tuple[str, int]] = []  # (node, mem) of every placed replica

    def top_up(n: int) -> None:
        nonlocal next_job
        for d in _demands(rng, n, next_job):
            sched.enqueue(d)
        next_job += n

    top_up(JOBS)
    for d, nodes in sched.drain():  # fill the cluster; the head no longer fits
        holds.extend((n, d.mem) for n in nodes)
    queue: Any = sched.queue  # type: ignore[attr-defined]
    top_up(JOBS - len(queue))
    times = []
    placed_total = 0
    shortest = JOBS
    for _ in range(TRIALS):
        i = rng.randrange(len(holds))
        holds[i], holds[-1] = holds[-1], holds[i]
        node, mem = holds.pop()
        gc.disable()
        t0 = time.perf_counter()
        sched.release(node, mem)
        placed = sched.drain()
        times.append(time.perf_counter() - t0)
        gc.enable()
        for d, nodes in placed:
            holds.extend((n, d.mem) for n in nodes)
            placed_total += len(nodes)
        shortest = min(shortest, len(queue))
        if len(queue) < JOBS:
            top_up(JOBS - len(queue))  # keep the queue long (untimed)
    return times, placed_total, shortest


# --- (c) through Jobs, with the ticket store ---------------------------------------------
def _through_jobs() -> tuple[float, int]:
    """Seconds and replicas of submitting and placing jobs through a real `Jobs` (no launch)."""
    from corral.master.control import Master, MasterConfig

    rng = random.Random(SEED)
    nodes = _nodes(rng)
    demands = _demands(rng, JOBS)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        master = Master(MasterConfig(state_dir=state))
        jobs = master.jobs
        jobs.start(state / "jobs.db")
        for name, offer in nodes:
            jobs.sched.set_node(name, offer, "alive")

        def no_launch(coro: Any) -> None:
            coro.close()  # placement is measured, not the workers

        jobs._spawn = no_launch  # type: ignore[method-assign]

        async def submit_all() -> tuple[float, int]:
            replicas = 0
            t0 = time.perf_counter()
            for d in demands:
                job = await jobs.submit(["sleep", "30"], d.replicas, d.mem, d.spread)
                if job.state != "running":
                    break  # the cluster is full: measured up to here
                replicas += d.replicas
            return time.perf_counter() - t0, replicas

        try:
            return asyncio.run(submit_all())
        finally:
            asyncio.run(jobs.close())
            master.events.close()


def run() -> list[str]:
    fast_s, fast_n, fast_p = _throughput(Scheduler)
    slow_s, slow_n, slow_p = _throughput(NaiveScheduler)
    same = fast_p == slow_p
    rate, ref_rate = fast_n / fast_s, slow_n / slow_s
    out = [
        line(
            f"scheduler placements ({NODES:,} nodes, {JOBS:,} jobs of 1-8 replicas)",
            f"{rate:,.0f} replicas/s ({fast_n:,} replicas in {fast_s * 1000:.0f} ms of drain, "
            f"{rate / ref_rate:.0f}x the naive best fit; "
            f"same placements: {'yes' if same else 'NO'})",
            f"naive best fit over every node {ref_rate:,.0f} replicas/s",
            f">= {TARGET_RATE:,} replica placements/s",
            rate >= TARGET_RATE and same,
        )
    ]
    times, placed, shortest = _reevaluate(Scheduler)
    ref_times, _, _ = _reevaluate(NaiveScheduler)
    ms = 1000
    p50, p99 = pct(times, 50) * ms, pct(times, 99) * ms
    ref50, ref99 = pct(ref_times, 50) * ms, pct(ref_times, 99) * ms
    out.append(
        line(
            f"queue re-evaluated on a release ({TRIALS:,} trials, queue >= {shortest:,} jobs, "
            f"head does not fit)",
            f"p99 {p99:.3f} ms, p50 {p50:.3f} ms, max {max(times) * ms:.2f} ms "
            f"({placed:,} replicas placed over the trials)",
            f"naive best fit p99 {ref99:.2f} ms, p50 {ref50:.2f} ms",
            f"p99 <= {TARGET_P99_MS:g} ms",
            p99 <= TARGET_P99_MS,
        )
    )
    jobs_s, jobs_n = _through_jobs()
    out.append(
        f"[INFO] through Jobs with the SQLite ticket store (submit, place, store; no launch): "
        f"{jobs_n / jobs_s:,.0f} replicas/s ({jobs_n:,} replicas in {jobs_s:.2f} s) "
        f"| reference: the scheduler alone {rate:,.0f} replicas/s"
    )
    return out
