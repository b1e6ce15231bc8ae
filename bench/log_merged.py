"""The merged log view: 8 processes writing 5,000 lines a second each.

Two real workers run 8 real programs (a rate-limited writer, RATE lines/s
each for SECONDS s in batches every 10 ms, after a delay so the view
follows them from their first line).  The dashboard (`CorralApp` with
a real, started `Master`, headless at 120x40, in this process) marks them
all in the processes table and opens their merged view (``M``).  Figures:

- lines lost: every line of each program's log file on its worker's disk
  (the reference) must have reached the pane, in order, once, tagged with
  its own process;
- frames: the duration of every screen update while the 8 logs pour in
  (layout, compositor and the terminal encoding a real driver would do).

Reference in the same run: the same frames with the dashboard idle beside
the same processes, before they start writing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.log_pane import _until
from bench.report import line, pct
from bench.tui_feed import FrameTimer, GcTimer
from corral.master.control import Master, MasterConfig

PROCS = 8
RATE = 5_000
SECONDS = 5.0
LINES = int(RATE * SECONDS)
DELAY = 6.0  # the programs wait this long: the view opens first
FRAME_MS = 16.0
WORKERS = ("m1", "m2")

# Writes its due lines every 10 ms: 8 of them must leave the 2 cores to the dashboard.
PROGRAM = """
import sys, time
n, rate, delay = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)
out, pad, i, t0 = sys.stdout, "x" * 24, 0, time.monotonic()
while i < n:
    due = min(n, int((time.monotonic() - t0) * rate) + 1)
    if due > i:
        now = time.time()
        out.write("".join(f"{j} {now:.6f} {pad}\\n" for j in range(i, due)))
        out.flush()
        i = due
    time.sleep(0.01)
"""


def _spawn(base: Path, address: str, token: str, name: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "corral", "worker", "--master", address]
    cmd += ["--name", name, "--root", str(base / name)]
    with open(base / f"{name}.out", "wb") as log:
        env = dict(os.environ, CORRAL_TOKEN=token)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


async def _measure(base: Path) -> dict[str, Any]:
    from corral.tui.app import CorralApp

    master = Master(
        MasterConfig(state_dir=base / "master", listen="127.0.0.1:0", api="127.0.0.1:0")
    )
    taken: dict[int, list[bytes]] = {}
    idle_frames: list[float] = []
    pauses: list[float] = []
    workers: list[subprocess.Popen[bytes]] = []
    with FrameTimer() as frames, GcTimer(pauses):
        app = CorralApp(master)
        FrameTimer.encode_frames(app)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(lambda: master.listen_address, 10, "the master")
            workers = [_spawn(base, master.listen_address, master.token, n) for n in WORKERS]
            try:
                alive = lambda: all(master.cluster.node_state(n) == "alive" for n in WORKERS)  # noqa: E731
                await _until(alive, 20, "the workers")
                argv = [sys.executable, "-c", PROGRAM, str(LINES), str(RATE), str(DELAY)]
                launched = await asyncio.gather(
                    *(
                        master.launch(argv, nodes=[WORKERS[i % 2]], app=f"w{i}")
                        for i in range(PROCS)
                    )
                )
                procs = [r.procs[0] for r in launched]
                keys = [p.key for p in procs]
                dash = app.dashboard
                await _until(lambda: all(k in dash.procs.rows for k in keys), 5, "the rows")
                for key in keys:
                    dash.procs.select(key)
                    dash.procs.action_toggle_mark()
                await pilot.pause(0.3)  # the cursor's moves shown before M, as a person's are
                pane = dash.log_pane
                original = pane._merged_piece

                def counting(tag: int, piece: Any) -> None:
                    taken.setdefault(tag, []).append(piece.data)
                    original(tag, piece)

                pane._merged_piece = counting  # type: ignore[method-assign]
                dash.action_merged_logs()
                assert sorted(pane.merged) == sorted(keys), pane.merged
                await pilot.pause(1.0)
                del frames.frames[:], pauses[:]
                await asyncio.sleep(2.0)
                idle_frames = list(frames.frames)
                del frames.frames[:], pauses[:]
                want = PROCS * LINES
                try:
                    await _until(lambda: pane.ingested >= want, DELAY + SECONDS + 60, "all lines")
                except TimeoutError:
                    print(f"only {pane.ingested} of {want} lines; merged {pane.merged}")
                    raise
                busy = list(frames.frames)
                merged = list(pane.merged)
                files = {
                    key: (
                        base / p.node / "apps" / f"w{i}" / "logs" / f"{p.launch}.log"
                    ).read_bytes()
                    for i, (key, p) in enumerate(zip(keys, procs, strict=True))
                }
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(10)
    got = {merged[tag]: b"".join(parts) for tag, parts in taken.items()}
    return {
        "files": files,
        "got": got,
        "frames": busy,
        "idle": idle_frames,
        "gc": pauses,
        "ingested": pane.ingested,
    }


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_measure(Path(tmp)))
    lost, wrong = 0, 0
    for key, data in r["files"].items():
        want = data.splitlines()
        have = r["got"].get(key, b"").splitlines()
        lost += max(0, len(want) - len(have))
        wrong += have != want
    total = sum(len(d.splitlines()) for d in r["files"].values())
    frames, idle, ms = r["frames"], r["idle"], 1000
    p95 = pct(frames, 95) * ms if frames else float("inf")
    pauses = r["gc"]
    return [
        line(
            f"merged log view, {PROCS} logs at {RATE:,} lines/s each: lines lost",
            f"{lost} lost of {total:,}"
            + ("" if not wrong else f", {wrong} logs OUT OF ORDER or mixed up"),
            f"{total:,} lines in the {PROCS} log files on the workers",
            "0 lost",
            lost == 0 and wrong == 0 and total == PROCS * LINES,
        ),
        line(
            f"merged log view, {PROCS} logs at {RATE:,} lines/s each: frames",
            f"p50 {pct(frames, 50) * ms:.1f} ms, p95 {p95:.1f} ms, max {max(frames) * ms:.1f} ms "
            f"over {len(frames)} frames; {len(pauses)} full GC pauses",
            f"the idle dashboard beside the same processes: p95 "
            f"{pct(idle, 95) * ms if idle else float('nan'):.1f} ms over {len(idle)} frames",
            f"p95 <= {FRAME_MS:g} ms",
            p95 <= FRAME_MS,
        ),
    ]


if __name__ == "__main__":
    for text in run():
        print(text)
