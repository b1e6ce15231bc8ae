"""The dashboard under a big feed, and idle beside 100 live nodes.

(a) 1,000 nodes with 10 processes each, every node beating once a second
with new metrics and a new sample of each process (cpu, rss and state
change), driven through the real `Cluster` of a real (unstarted) `Master`
into the real `CorralApp`, headless at 120x40.  Beats are spread over the
second as real workers' are.  Figures: the wall time of each coalesced
refresh (`Dashboard.refresh_rows`), of the panes' once-a-second ticks, and
of each frame (the screen's update: layout, compositor, and the terminal
encoding a real driver would write).  Reference: the same feed applied to a
`Cluster` with no subscriber, per refresh-sized slice.

(b) `corral master` with its dashboard on a pseudo-terminal (120x40, the
output drained) and 100 simulated workers beating at 1 Hz from another
process: the master's CPU.  Reference: `corral master --headless` with the
same workers.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from textual.screen import Screen

from bench.cluster import wait_until
from bench.heartbeat import cpu_share
from bench.report import line, pct
from corral.master.control import Master, MasterConfig
from corral.master.model import Cluster
from corral.transport.messages import Metrics, NodeFacts, ProcInfo, ProcSample

NODES = 1000
PER_NODE = 10
SECONDS = 12  # of feed, after the first full screen
SLICES = 50  # beats arrive spread over each second, in this many groups
TARGET_MS = 16.0
LIVE = 100
IDLE_WINDOW = 10.0
GiB = 1 << 30


# --- the feed ------------------------------------------------------------------
def _name(i: int) -> str:
    return f"n{i:04d}"


def _register(cluster: Cluster, t0: float) -> None:
    for i in range(NODES):
        name = _name(i)
        facts = NodeFacts(name=name, hostname=name, cpus=8, mem_total=64 * GiB, boot_id="b")
        procs = [
            ProcInfo(
                launch=f"L{i}.{j}",
                pid=1000 + j,
                app=f"app{j % 4}",
                argv=["worker", f"--shard={j}"],
                state="running",
                started_at=t0 - 60 * j,
            )
            for j in range(PER_NODE)
        ]
        cluster.register(facts, f"10.0.{i // 250}.{i % 250}:7070", procs)


def _beat_args(i: int, tick: int) -> tuple[Metrics, list[ProcSample]]:
    """Node ``i``'s beat number ``tick``: every process's cpu and rss moved."""
    metrics = Metrics(cpu_percent=(i + tick * 7) % 100, mem_used=(i + tick) % 60 * GiB)
    samples = [
        ProcSample(
            pid=1000 + j,
            state="running" if (tick + j) % 3 else "sleeping",
            cpu_user=tick * 0.5 + j,
            cpu_sys=tick * 0.1,
            rss=(50 + (tick * 13 + j) % 200) << 20,
            max_rss=250 << 20,
        )
        for j in range(PER_NODE)
    ]
    return metrics, samples


def _slices() -> list[list[int]]:
    """Nodes by the slice of a second they beat in: spread by a hash of the name,
    as `bench.simworkers` spreads real connections (not in index order, which
    would put every row on screen in the same slice)."""
    parts: list[list[int]] = [[] for _ in range(SLICES)]
    for i in range(NODES):
        parts[zlib.crc32(_name(i).encode()) % SLICES].append(i)
    return parts


def _model_only() -> list[float]:
    """Seconds to apply each second's 1,000 beats to a Cluster nobody watches."""
    cluster = Cluster()
    _register(cluster, time.time())
    times = []
    for tick in range(1, SECONDS + 1):
        beats = [(_name(i), *_beat_args(i, tick)) for i in range(NODES)]
        t0 = time.perf_counter()
        for name, metrics, samples in beats:
            cluster.beat(name, metrics, samples)
        times.append(time.perf_counter() - t0)
    return times


# --- timing hooks (the benchmark's, not the product's) ----------------------------
def _timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t0)

    return wrapper


class FrameTimer:
    """Times every screen update; renders each frame to terminal bytes as a real driver would."""

    def __init__(self) -> None:
        self.frames: list[float] = []
        self.walls: list[float] = []  # time.time() at the end of each frame
        self._original = Screen._on_timer_update

    def __enter__(self) -> FrameTimer:
        original, frames, walls = self._original, self.frames, self.walls

        def on_timer_update(screen: Screen[Any]) -> None:
            t0 = time.perf_counter()
            original(screen)
            frames.append(time.perf_counter() - t0)
            walls.append(time.time())

        Screen._on_timer_update = on_timer_update  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Screen._on_timer_update = self._original  # type: ignore[method-assign]

    @staticmethod
    def encode_frames(app: Any) -> None:
        """Headless apps skip the terminal encoding; do it (to a null file) so it is timed."""
        console = Console(file=open(os.devnull, "w"), force_terminal=True, width=120)  # noqa: SIM115
        original = app._display

        def display(screen: Screen[Any], renderable: Any) -> None:
            render = getattr(renderable, "render_segments", None)
            if render is not None:
                console.file.write(render(console))
            original(screen, renderable)

        app._display = display


class GcTimer:
    """Records how long each full (generation 2) garbage collection stalls the process."""

    def __init__(self, into: list[float]) -> None:
        self.pauses = into
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._t0)

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def _drive(master: Master, pace: float) -> None:
    """Beat every node once per second, a slice every ``pace`` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick in range(1, SECONDS + 1):
        for k, part in enumerate(_slices()):
            due = start + (tick - 1) + k * pace
            await asyncio.sleep(max(0.0, due - loop.time()))
            for i in part:
                master.cluster.beat(_name(i), *_beat_args(i, tick))
    await asyncio.sleep(1.0)  # the last refresh and tick


async def _ui_run(tmp: Path) -> dict[str, list[float]]:
    from corral.tui.app import CorralApp
    from corral.tui.widgets.nodes import NodesTable
    from corral.tui.widgets.procs import ProcsTable

    master = Master(MasterConfig(state_dir=tmp / "state"))
    _register(master.cluster, time.time())
    refresh: list[float] = []
    ticks: list[float] = []
    first: list[float] = []
    batch: list[float] = []  # changed processes per refresh
    originals = ProcsTable.tick, NodesTable.tick
    ProcsTable.tick = _timed(ProcsTable.tick, ticks)  # type: ignore[method-assign]
    NodesTable.tick = _timed(NodesTable.tick, ticks)  # type: ignore[method-assign]
    gc_pauses: list[float] = []
    with FrameTimer() as frames, GcTimer(gc_pauses):
        app = CorralApp(master, start_master=False)
        FrameTimer.encode_frames(app)
        t0 = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            first.append(time.perf_counter() - t0)
            dash = app.dashboard
            real_refresh = _timed(dash.refresh_rows, refresh)

            def counted_refresh() -> None:
                batch.append(len(dash._dirty_procs))
                real_refresh()

            dash.refresh_rows = counted_refresh  # type: ignore[method-assign]
            await pilot.pause(1.0)
            del frames.frames[:], ticks[:], gc_pauses[:], refresh[:], batch[:]
            await _drive(master, 1.0 / SLICES)
            shown = dash.procs.row_count
    ProcsTable.tick, NodesTable.tick = originals  # type: ignore[method-assign]
    assert shown == NODES * PER_NODE, shown
    return {
        "refresh": refresh,
        "ticks": ticks,
        "frames": list(frames.frames),
        "first": first,
        "gc": gc_pauses,
        "batch": batch,
    }


# --- (b) idle with 100 live nodes ------------------------------------------------
def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def _idle_master(tmp: Path, dashboard: bool) -> tuple[float, int]:
    """CPU share of `corral master` (dashboard on a pty, or headless) with LIVE sim workers."""
    state = tmp / ("dash" if dashboard else "headless")
    cmd = [sys.executable, "-m", "corral", "master", "--listen", "127.0.0.1:0"]
    cmd += ["--api", "127.0.0.1:0", "--state-dir", str(state), "--heartbeat", "1"]
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40")
    if dashboard:
        mfd, sfd = pty.openpty()
        fcntl.ioctl(sfd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        master = subprocess.Popen(
            cmd, stdin=sfd, stdout=sfd, stderr=sfd, env=env, start_new_session=True
        )
        os.close(sfd)
        threading.Thread(target=_drain, args=(mfd,), daemon=True).start()
    else:
        cmd.append("--headless")
        master = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sim = None
    try:
        wait_until(lambda: (state / "listen").exists() and (state / "token").exists(), 20, "master")
        time.sleep(0.2)
        host, port = (state / "listen").read_text().strip().rsplit(":", 1)
        token = (state / "token").read_text().strip()
        sim = subprocess.Popen(
            [sys.executable, "-m", "bench.simworkers", host, port, str(LIVE), "60"],
            env=dict(os.environ, CORRAL_TOKEN=token),
            stdout=subprocess.PIPE,
        )
        assert sim.stdout is not None
        connected = int(sim.stdout.readline().split()[-1])
        time.sleep(3.0)  # start-up and the first beats behind us
        share = cpu_share(psutil.Process(master.pid), IDLE_WINDOW)
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(10)
        master.terminate()
        try:
            master.wait(10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        if dashboard:
            os.close(mfd)
    return share, connected


# --- report -------------------------------------------------------------------------
def _ms(values: list[float], q: float) -> float:
    return pct(values, q) * 1000 if values else float("nan")


def run() -> list[str]:
    model = _model_only()
    with tempfile.TemporaryDirectory() as tmp:
        ui = asyncio.run(_ui_run(Path(tmp)))
        dash_cpu, dash_n = _idle_master(Path(tmp), dashboard=True)
        head_cpu, head_n = _idle_master(Path(tmp), dashboard=False)
    refresh, ticks, frames, pauses = ui["refresh"], ui["ticks"], ui["frames"], ui["gc"]
    per_batch = sum(ui["batch"]) / max(1, len(ui["batch"]))
    # The model's time for as many process samples as one refresh applies.
    model_ms = _ms(model, 50) * per_batch / (NODES * PER_NODE)
    feed = f"{NODES} nodes, {NODES * PER_NODE} procs changing at 1 Hz"
    worst_gc = f"{max(pauses) * 1000:.0f} ms" if pauses else "-"
    return [
        line(
            f"dashboard refresh per update ({feed})",
            f"p50 {_ms(refresh, 50):.1f} ms, p95 {_ms(refresh, 95):.1f} ms, "
            f"max {max(refresh) * 1000:.0f} ms over {len(refresh)} refreshes "
            f"of {per_batch:.0f} changed procs on average",
            f"the same samples into the model alone {model_ms:.1f} ms "
            f"({_ms(model, 50):.1f} ms per second of feed)",
            f"p95 <= {TARGET_MS:g} ms",
            _ms(refresh, 95) <= TARGET_MS,
        ),
        line(
            "dashboard once-a-second tick (run times, beat ages on screen)",
            f"p95 {_ms(ticks, 95):.1f} ms, max {max(ticks) * 1000:.1f} ms over {len(ticks)} ticks",
            f"model alone per second of feed {_ms(model, 50):.1f} ms",
            f"p95 <= {TARGET_MS:g} ms",
            _ms(ticks, 95) <= TARGET_MS,
        ),
        line(
            "dashboard frame under the feed (layout, compositor, terminal encoding)",
            f"p50 {_ms(frames, 50):.1f} ms, p95 {_ms(frames, 95):.1f} ms, "
            f"max {max(frames) * 1000:.0f} ms over {len(frames)} frames; "
            f"{len(pauses)} full GC pauses (worst {worst_gc}) in {SECONDS} s; "
            f"first screen {ui['first'][0]:.1f} s",
            f"model alone per second of feed {_ms(model, 50):.1f} ms",
            f"p95 <= {TARGET_MS:g} ms",
            _ms(frames, 95) <= TARGET_MS,
        ),
        line(
            f"idle master + dashboard ({dash_n} live simulated nodes at 1 Hz, 120x40 pty)",
            f"CPU {dash_cpu * 100:.1f}% of a core",
            f"headless master with {head_n} nodes {head_cpu * 100:.1f}%",
            "<= 5% of a core",
            dash_cpu <= 0.05 and dash_n == LIVE,
        ),
    ]


if __name__ == "__main__":
    for text in run():
        print(text)
