"""Submit to running: a job of 8 replicas on 4 local workers, from the request to all running.

The master runs in this process (a real `Master` with its control API, as
``corral master --headless`` composes them, on its uvloop loop) and 4 real workers run as
processes on 127.0.0.1, each offering 20M to jobs (``--mem 20M``), so a
job of 8 x 10M ``sleep 30`` puts two replicas on every node.  Figure: from
the ``POST /v1/jobs`` request (over a kept-alive connection) to the moment
the master's jobs report every replica running, seen by a `Jobs`
subscriber (no polling).  Each job is then cancelled (``DELETE``) and its
end awaited, its memory free again, so the queue stays empty.  Reference in
the same run, alternated with the jobs: 8 sequential ``POST /v1/launch`` of
the same program, one node each, two per node, timed to the eighth reply
carrying its pid; those are killed after each round.  Every program started
is killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cluster import LocalCluster
from bench.report import line, median, pct
from corral.master.api import ApiServer, start_api
from corral.master.control import Master, MasterConfig
from corral.master.deployer import Deployer
from corral.transport.loop import run as run_loop

ROUNDS = 30
WARMUP = 3
WORKERS = 4
REPLICAS = 8
MEM = 10 << 20
OFFER = "20M"
ALIVE = ("running", "sleeping")
TARGET_MS = 15.0
PAUSE = 0.1  # seconds between rounds: each starts with the workers idle


class Api:
    """A kept-alive HTTP/1.1 connection to the master's API, on this event loop."""

    def __init__(self, address: str, token: str) -> None:
        self.address = address
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        if self.writer is None:
            host, port = self.address.rsplit(":", 1)
            self.reader, self.writer = await asyncio.open_connection(host, int(port))
        assert self.reader is not None
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.address}\r\n"
        head += f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n\r\n"
        self.writer.write(head.encode() + data)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (header := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        reply = json.loads(await self.reader.readexactly(length))
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {reply}")
        return reply

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


class Watch:
    """When each job first had every replica running, and when it ended (a `Jobs` subscriber)."""

    def __init__(self, master: Master) -> None:
        self.jobs = master.jobs
        self.running: dict[int, float] = {}
        self.cpu_at: dict[int, dict[int, int]] = {}  # job -> CPU snapshot when it ran
        self.ended: set[int] = set()
        self.moved = asyncio.Event()
        self.unsubscribe = self.jobs.subscribe(self._changed)

    def _changed(self, ids: frozenset[int]) -> None:
        now = time.perf_counter()
        for job_id in ids:
            job = self.jobs.open.get(job_id)
            if job is None:
                self.ended.add(job_id)
            elif job_id not in self.running and all(r.state in ALIVE for r in job.replicas):
                self.running[job_id] = now
                self.cpu_at[job_id] = cpu_snapshot()  # after the time is taken
        self.moved.set()

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            self.moved.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.moved.wait(), left)


def cpu_snapshot() -> dict[int, int]:
    """Nanoseconds of CPU each process on the box has run (``/proc/PID/schedstat``)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/schedstat", "rb") as f:
                    out[int(name)] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_between(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds of CPU every process used between two snapshots (new processes: all of theirs)."""
    return sum(ns - before.get(pid, 0) for pid, ns in after.items()) / 1e9


async def _job(api: Api, watch: Watch) -> tuple[float, float]:
    """Seconds from submit to every replica running, and the CPU every process used meanwhile.

    The job is cancelled and ended after.
    """
    body = {"argv": ["sleep", "30"], "replicas": REPLICAS, "mem": MEM, "app": "bench"}
    before = cpu_snapshot()
    t0 = time.perf_counter()
    job_id = (await api.call("POST", "/v1/jobs", body))["id"]
    await watch.until(lambda: job_id in watch.running, f"job {job_id} running")
    took = watch.running[job_id] - t0
    cpu = cpu_between(before, watch.cpu_at.pop(job_id))
    ticket = await api.call("GET", f"/v1/jobs/{job_id}")
    if len({r["node"] for r in ticket["replicas"]}) != WORKERS:
        raise RuntimeError(f"job {job_id} was not placed on every node: {ticket['replicas']}")
    await api.call("DELETE", f"/v1/jobs/{job_id}")
    await watch.until(lambda: job_id in watch.ended, f"job {job_id} to end")
    return took, cpu


async def _launches(api: Api, nodes: list[str]) -> float:
    """Seconds for 8 sequential launches, one node each; the programs are killed after."""
    targets = []
    t0 = time.perf_counter()
    for i in range(REPLICAS):
        body = {"argv": ["sleep", "30"], "nodes": [nodes[i % len(nodes)]], "app": "ref"}
        proc = (await api.call("POST", "/v1/launch", body))["procs"][0]
        if proc["pid"] <= 0:
            raise RuntimeError(f"launch without a pid: {proc}")
        targets.append(proc["key"])
    took = time.perf_counter() - t0
    await api.call("POST", "/v1/signal", {"targets": targets, "signal": "SIGKILL"})
    return took


async def _measure(base: Path) -> tuple[list[float], list[float], list[float]]:
    cluster = LocalCluster(base, heartbeat=1.0)
    state = base / "master"
    state.mkdir()
    master = Master(MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=state))
    server: ApiServer | None = None
    api: Api | None = None
    try:
        await master.start()
        server = await start_api(master, Deployer(master))
        cluster.listen, cluster.token = master.listen_address, master.token
        watch = Watch(master)
        nodes = [f"w{i}" for i in range(1, WORKERS + 1)]
        for name in nodes:
            cluster.start_worker(name, wait=False, extra_args=["--mem", OFFER])
        deadline = time.monotonic() + 15
        while not all(master.cluster.node_state(n) == "alive" for n in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("timed out waiting for the workers to join")
            await asyncio.sleep(0.01)  # setup, not measured
        api = Api(server.address, master.token)
        jobs: list[float] = []
        cpus: list[float] = []  # CPU every process used while each job started
        refs: list[float] = []
        for i in range(WARMUP + ROUNDS):
            await asyncio.sleep(PAUSE)  # the last round's kills and refills out of the way
            job, cpu = await _job(api, watch)
            await asyncio.sleep(PAUSE)
            ref = await _launches(api, nodes)
            if i >= WARMUP:
                jobs.append(job)
                cpus.append(cpu)
                refs.append(ref)
        watch.unsubscribe()
        return jobs, cpus, refs
    finally:
        try:
            if api is not None:
                await api.close()
            if server is not None:
                await server.stop()
            await master.stop()
        finally:
            cluster.stop()  # the workers, and every program under their roots


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        jobs, cpus, refs = run_loop(_measure(Path(tmp)))  # uvloop, as `corral master` runs
    ms = 1000
    p50, p99 = pct(jobs, 50) * ms, pct(jobs, 99) * ms
    ref50 = pct(refs, 50) * ms
    cores = os.cpu_count() or 1
    busy = median([cpu / (took * cores) for cpu, took in zip(cpus, jobs, strict=True)])
    return [
        line(
            f"submit to all {REPLICAS} replicas running ({ROUNDS} jobs of {REPLICAS} x 10M "
            f"`sleep`, {WORKERS} workers)",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({ref50 / p50:.1f}x faster than the reference)",
            f"{REPLICAS} sequential launches through the API p50 {ref50:.1f} ms",
            f"p50 <= {TARGET_MS:g} ms",
            p50 <= TARGET_MS,
        ),
        f"[INFO] CPU used by every process on the box while a job started: median "
        f"{median(cpus) * ms:.0f} ms ({median(cpus) * ms / REPLICAS:.1f} ms a replica), "
        f"{busy:.0%} of the {cores} cores over the window",
    ]
