"""Soak: the dashboard's memory over a long run beside a busy cluster (issue 11, item 8).

`CorralApp` with a real, started `Master` (headless at 160x48, in this
process) and 100 simulated workers in another process (real protocol
clients, `SoakWorker`): each beats at 1 Hz with samples of its live
processes, launches short processes that end a few seconds later (RATE a
second over the cluster, some exit, some are killed), and streams a log to
whoever follows one of its processes (LOG_RATE lines a second).  The
dashboard is left as it opens, as in a demo: the cursor on the first row,
its log pane following the process there (which the churn changes).

The master keeps KEEP ended processes per node (``[history] keep`` in its
config.toml): the warm-up lasts until that history is (95%) full, after
which nothing more should be kept but the last few ended processes and
the master's 10-minute graphs (per node and per live process) still
filling.  Figures: the RSS after the warm-up, minute by minute and at the
end, the growth per minute (least squares over a sample every few
seconds), the Python heap (allocated blocks) the same way, and the bound
the configured history sets: KEEP x nodes ended processes at what one
costs in the master's model (measured with tracemalloc).  Reference: the
RSS growth during the warm-up, while the history filled.

Found with it (issue 11 reported 106 -> 123 MB over 8 minutes of the
demo): the footer's keys leaked at each rebuild (see `tui.widgets.footer`),
75 MiB a minute here while the cursor's row changed with the churn.

``python -m bench.soak --minutes 8`` runs longer; ``--trace`` prints the
allocation sites that grew most after the warm-up (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil

from bench.report import line
from bench.simworkers import SimWorker
from corral.master.control import Master, MasterConfig
from corral.transport.connection import ConnectionClosed
from corral.transport.messages import (
    ENDED_STATES,
    Error,
    Heartbeat,
    LogChunk,
    Logs,
    Metrics,
    Ok,
    ProcEvent,
    ProcInfo,
    ProcSample,
    Register,
    Unfollow,
)

NODES = 100
LIVE = 4  # long-lived processes per node
RATE = 20.0  # launches (and as many ends) a second, over the cluster
LIFE = (2.0, 8.0)  # seconds a short process lives (uniform)
KEEP = 5  # [history] keep: ended processes remembered per node
LOG_RATE = 5.0  # lines a second of a followed log
MINUTES = 1.0  # measured, after the warm-up
WARMUP = 30.0  # seconds at least, and until the history is (nearly) full
FULL = 0.95  # ... this share of it
SAMPLE_EVERY = 5.0  # seconds between two RSS samples
SIZE = (160, 48)
MiB = 1 << 20
# Pass: after the warm-up, RSS grows less than this a minute.  The history
# is full by then, so a flat line is expected; this leaves the allocator's
# noise (arenas, fragmentation) room.
GROWTH_MIB_PER_MIN = 1.0


# --- the simulated cluster (another process) -------------------------------------------
class SoakWorker(SimWorker):
    """A simulated worker with processes that come and go, and logs that can be followed."""

    def __init__(self, host: str, port: int, token: str, name: str, rate: float) -> None:
        super().__init__(host, port, token, name)
        self.rate = rate  # launches a second on this node
        self.rng = random.Random(name)
        self.next_pid = 1000
        self.procs: dict[int, ProcInfo] = {}
        self.streams: dict[int, asyncio.Task[None]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def _new(self, long: bool) -> ProcInfo:
        self.next_pid += 1
        pid = self.next_pid
        argv = ["server", f"--port={pid}"] if long else ["job", f"--n={pid}", "--quick"]
        return ProcInfo(
            launch=f"{self.name}-{pid}",
            pid=pid,
            app=f"app{pid % 3}",
            argv=argv,
            state="running",
            started_at=time.time(),
        )

    async def connect_and_run(self) -> None:
        for _ in range(LIVE):
            p = self._new(long=True)
            self.procs[p.pid] = p
        from bench.simworkers import dial

        self.conn, self.welcome = await dial(self.host, self.port, self.token, self.name)
        await self.conn.send(Register(facts=_facts(self.name), procs=list(self.procs.values())))
        self.tasks = [
            asyncio.create_task(self._beats()),
            asyncio.create_task(self._churn()),
            asyncio.create_task(self._requests()),
        ]

    async def _beats(self) -> None:
        assert self.conn is not None
        await asyncio.sleep(self.rng.random())  # spread over the second
        next_at = time.monotonic()
        while True:
            self.seq += 1
            samples = []
            for p in self.procs.values():
                p.cpu_user += self.rng.uniform(0.0, 0.5)
                p.cpu_sys += self.rng.uniform(0.0, 0.1)
                p.rss = self.rng.randrange(20, 400) * MiB
                p.max_rss = max(p.max_rss, p.rss)
                state = "running" if self.rng.random() < 0.5 else "sleeping"
                samples.append(ProcSample(p.pid, state, p.cpu_user, p.cpu_sys, p.rss, p.max_rss))
            metrics = Metrics(
                cpu_percent=self.rng.uniform(0, 100),
                mem_used=self.rng.randrange(1, 15) << 30,
                mem_total=16 << 30,
                load1=self.rng.uniform(0, 4),
                procs_alive=len(self.procs),
            )
            try:
                self.conn.send_nowait(Heartbeat(seq=self.seq, metrics=metrics, procs=samples))
            except ConnectionClosed:
                return
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _churn(self) -> None:
        assert self.conn is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate))
            p = self._new(long=False)
            self.procs[p.pid] = p
            try:
                self.conn.send_nowait(ProcEvent(proc=p))
            except ConnectionClosed:
                return
            loop.call_later(self.rng.uniform(*LIFE), self._end, p.pid)

    def _end(self, pid: int) -> None:
        p = self.procs.pop(pid, None)
        if p is None or self.conn is None:
            return
        if self.rng.random() < 0.7:
            p.state, p.exit_code = "exited", self.rng.choice((0, 0, 0, 1, 2))
        else:
            p.state, p.signal = "killed", self.rng.choice(("SIGTERM", "SIGKILL", "SIGINT"))
        p.ended_at, p.rss = time.time(), 0
        with contextlib.suppress(ConnectionClosed):  # the soak is ending
            self.conn.send_nowait(ProcEvent(proc=p))

    async def _requests(self) -> None:
        assert self.conn is not None
        while True:
            msg: Any = await self.conn.recv()
            if isinstance(msg, Logs) and msg.follow:
                self.conn.send_nowait(LogChunk(id=msg.id, offset=0, data=b"", size=0))
                self.streams[msg.id] = asyncio.create_task(self._stream(msg.id, msg.pid))
            elif isinstance(msg, Logs):
                self.conn.send_nowait(LogChunk(id=msg.id, offset=0, data=b"", size=0))
            elif isinstance(msg, Unfollow):
                task = self.streams.pop(msg.stream, None)
                if task is not None:
                    task.cancel()
                self.conn.send_nowait(Ok(id=msg.id))
            elif hasattr(msg, "id"):
                self.conn.send_nowait(Error(id=msg.id, message="simulated worker"))

    async def _stream(self, rid: int, pid: int) -> None:
        assert self.conn is not None
        offset, n = 0, 0
        while True:
            await asyncio.sleep(1.0 / LOG_RATE)
            n += 1
            data = f"{time.time():.3f} {self.name}:{pid} line {n} {'x' * 60}\n".encode()
            with contextlib.suppress(ConnectionClosed):  # the soak is ending
                self.conn.send_nowait(LogChunk(id=rid, offset=offset, data=data))
            offset += len(data)

    async def close(self) -> None:
        for task in [*self.tasks, *self.streams.values()]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.streams.values(), return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()


def _facts(name: str) -> Any:
    from bench.simworkers import facts

    return facts(name)


async def simulate(host: str, port: int, token: str, nodes: int, rate: float) -> None:
    workers = [SoakWorker(host, port, token, f"n{i:03d}", rate / nodes) for i in range(nodes)]
    for w in workers:  # one at a time: the master admits a few handshakes at once
        await w.connect_and_run()
    print(f"connected {len(workers)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)


# --- the dashboard (this process) ----------------------------------------------------
def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60.0 if sxx else 0.0


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return value


def _ended(master: Master) -> int:
    """Ended processes the master keeps (not those shown "lost" with a lost node)."""
    return sum(1 for p in master.cluster.procs() if p.state in ENDED_STATES)


def _alive(master: Master) -> int:
    return sum(n.state == "alive" for n in master.cluster.nodes())


async def _soak(base: Path, opts: argparse.Namespace) -> dict[str, Any]:
    from corral.tui.app import CorralApp

    state = base / "master"
    state.mkdir()
    (state / "config.toml").write_text(f"[history]\nkeep = {opts.keep}\n")
    master = Master(MasterConfig(state_dir=state, listen="127.0.0.1:0", api="127.0.0.1:0"))
    me = psutil.Process()
    out: dict[str, Any] = {"rss": [], "blocks": []}
    sim = None
    app = CorralApp(master)
    async with app.run_test(size=SIZE) as pilot:
        await _until(lambda: master.listen_address, 10, "the master")
        host, port = master.listen_address.rsplit(":", 1)
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.soak",
                "sim",
                host,
                port,
                str(opts.nodes),
                str(opts.rate),
            ],
            env=dict(os.environ, CORRAL_TOKEN=master.token),
            stdout=subprocess.PIPE,
        )
        try:
            await _until(lambda: _alive(master) >= opts.nodes, 60, f"{opts.nodes} nodes")
            dash = app.dashboard
            # The dashboard as it opens: the cursor on the first row, the log
            # pane following the process there (whichever the churn puts there).
            await _until(lambda: dash.log_pane.key, 10, "the log pane to follow")
            keys: set[str] = set()
            t0 = time.monotonic()
            # Nearly full: the last few nodes to reach their quota would
            # double the wait, and what they add is within the bound.
            full = int(FULL * opts.keep * opts.nodes)
            rss0 = me.memory_info().rss
            ended0 = _ended(master)
            await _until(
                lambda: time.monotonic() - t0 >= opts.warmup and _ended(master) >= full,
                opts.warmup + 600,
                "the history to fill",
            )
            gc.collect()
            out["warmup"] = time.monotonic() - t0
            out["warm_rss"], out["warm_ended"] = me.memory_info().rss, _ended(master)
            out["fill_rss"], out["fill_ended"] = out["warm_rss"] - rss0, out["warm_ended"] - ended0
            if opts.trace:
                tracemalloc.start(12)
                first = tracemalloc.take_snapshot()
            lines0 = dash.log_pane.ingested
            cpu0 = me.cpu_times()
            t1 = time.monotonic()
            end = t1 + opts.minutes * 60
            while (now := time.monotonic()) < end:
                out["rss"].append((now - t1, me.memory_info().rss / MiB))
                out["blocks"].append((now - t1, sys.getallocatedblocks()))
                keys.add(str(dash.log_pane.key))
                await pilot.pause(min(SAMPLE_EVERY, end - now))
            gc.collect()
            now = time.monotonic()
            out["rss"].append((now - t1, me.memory_info().rss / MiB))
            out["blocks"].append((now - t1, sys.getallocatedblocks()))
            cpu1 = me.cpu_times()
            used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            out["cpu"] = used / max(now - t1, 1e-9)
            out["end_alive"] = _alive(master)
            out["end_rss"], out["end_ended"] = me.memory_info().rss, _ended(master)
            out["lines"] = dash.log_pane.ingested - lines0
            out["followed"] = len(keys)
            out["procs_rows"] = dash.procs.row_count
            out["measured"] = now - t1
            if opts.trace:
                last = tracemalloc.take_snapshot()
                tracemalloc.stop()
                out["trace"] = _top(first, last)
        finally:
            if sim is not None:
                sim.terminate()
                sim.wait(10)
                if sim.stdout is not None:
                    sim.stdout.close()
    return out


def _top(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, n: int = 12) -> list[str]:
    stats = last.compare_to(first, "traceback")
    lines = []
    for stat in stats[:n]:
        lines.append(f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks")
        lines += ["    " + str(f) for f in stat.traceback.format()[-8:]]
    return lines


def _cost_per_ended(count: int = 2000) -> float:
    """Bytes the master's model holds per ended process it keeps (tracemalloc).

    Each process is launched, sampled by a few beats and ended, as in the
    soak, into a `Cluster` that keeps them all; what the dashboard's tables
    add per row is not in it (a reference to the same snapshot, cells drawn
    only on screen).
    """
    from corral.master.model import Cluster
    from corral.transport.messages import NodeFacts

    cluster = Cluster(keep_ended=count)
    cluster.register(
        NodeFacts(name="n", hostname="n", cpus=8, mem_total=1 << 34, boot_id="b"), "a", []
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    now = time.time()
    for pid in range(1000, 1000 + count):
        argv = ["job", f"--n={pid}", "--quick"]
        p = ProcInfo(
            launch=f"n-{pid}",
            pid=pid,
            app=f"app{pid % 3}",
            argv=argv,
            state="running",
            started_at=now,
        )
        cluster.update_proc("n", p)
        for k in range(3):
            sample = ProcSample(pid, "running", 0.1 * k, 0.01 * k, 50 * MiB, 50 * MiB)
            cluster.beat("n", Metrics(cpu_percent=5.0), [sample])
        ended = ProcInfo(
            launch=p.launch,
            pid=pid,
            app=p.app,
            argv=argv,
            state="exited",
            started_at=now,
            exit_code=0,
            ended_at=now + 1,
            cpu_user=0.2,
            cpu_sys=0.02,
            max_rss=50 * MiB,
        )
        cluster.update_proc("n", ended)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def run(argv: list[str] | None = None) -> list[str]:
    opts = _parser().parse_args(argv or [])
    per_ended = _cost_per_ended()
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_soak(Path(tmp), opts))
    rss_slope = _slope(got["rss"])
    blocks_slope = _slope(got["blocks"])
    kept = opts.keep * opts.nodes
    fill_rate = got["fill_rss"] / MiB / max(got["warmup"], 1.0) * 60
    by_minute = ", ".join(f"{v:.1f}" for t, v in got["rss"] if int(t) % 60 < SAMPLE_EVERY)
    out = [
        line(
            f"dashboard memory over {got['measured'] / 60:.1f} min after a "
            f"{got['warmup']:.0f} s warm-up ({opts.nodes} nodes, {opts.rate:g} launches/s "
            f"ending after {LIFE[0]:g}-{LIFE[1]:g} s, one log followed at {LOG_RATE:g} lines/s, "
            f"{SIZE[0]}x{SIZE[1]})",
            f"RSS {got['warm_rss'] / MiB:.1f} MiB after warm-up, {got['end_rss'] / MiB:.1f} MiB "
            f"at the end ({by_minute} MiB minute by minute): {rss_slope:+.2f} MiB/min; "
            f"Python heap {blocks_slope:+.0f} blocks/min; "
            f"{got['end_ended']} ended processes kept, {got['end_alive']} nodes alive, "
            f"{got['lines']} log lines followed (of {got['followed']} processes in turn); "
            f"dashboard CPU {got['cpu'] * 100:.0f}% of a core",
            f"while the history filled (warm-up) {fill_rate:+.1f} MiB/min; the history "
            f"(keep {opts.keep} x {opts.nodes} nodes = {kept} ended processes, "
            f"{per_ended / 1024:.1f} KiB each in the model) bounds growth at "
            f"{kept * per_ended / MiB:.1f} MiB, the default keep 500 at "
            f"{500 * opts.nodes * per_ended / MiB:.0f} MiB",
            f"<= {GROWTH_MIB_PER_MIN:g} MiB/min once the history is full",
            rss_slope <= GROWTH_MIB_PER_MIN and got["end_alive"] == opts.nodes,
        )
    ]
    return out + got.get("trace", [])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=MINUTES, help="measured after the warm-up")
    p.add_argument("--warmup", type=float, default=WARMUP, help="seconds at least")
    p.add_argument("--nodes", type=int, default=NODES)
    p.add_argument("--rate", type=float, default=RATE, help="launches a second")
    p.add_argument("--keep", type=int, default=KEEP, help="[history] keep")
    p.add_argument("--trace", action="store_true", help="print what grew (tracemalloc)")
    return p


if __name__ == "__main__":
    if sys.argv[1:2] == ["sim"]:
        host, port, nodes, rate = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(simulate(host, port, os.environ["CORRAL_TOKEN"], nodes, float(rate)))
    else:
        for text in run(sys.argv[1:]):
            print(text)
