"""The log pane following a program that writes 50,000 lines a second.

A real worker process runs a real program (Python, rate-limited to RATE
lines/s for SECONDS s, each line carrying its sequence number and the
`time.time()` it was written at).  The dashboard (`CorralApp` with a real,
started `Master`, headless at 120x40, in this process) selects the process,
so its log pane follows it.  Figures:

- frames: the duration of every screen update while ingesting, and the
  event loop's worst stall (a 5 ms ticker's lateness);
- lines lost: every line of the log file on the worker's disk (the
  reference) must have reached the pane's ingest path (the stream's pieces,
  joined by their byte offsets), in order, once;
- latency: from the time in a line to the end of the first frame after the
  pane's repaint that put that line in its window (what the screen shows).

Reference in the same run: a tail loop in another process reading the same
log file straight from disk, polling every 10 ms, with the same latency
measure (to its read).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import line, pct
from bench.tui_feed import FrameTimer, GcTimer
from corral.master.control import Master, MasterConfig

RATE = 50_000
SECONDS = 5.0
LINES = int(RATE * SECONDS)
DELAY = 1.5  # the program waits this long, so the pane follows it from its first line
FRAME_MS = 33.0
LATENCY_MS = 100.0

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
    else:
        time.sleep(0.0005)
"""


# --- the reference: a tail loop on the file ----------------------------------------
def tail(path: Path, lines: int, timeout: float) -> dict[str, Any]:
    """Read ``path`` as it grows; per line, the delay from its stamp to its read."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    lat: list[float] = []
    buf = b""
    with open(path, "rb") as f:
        while len(lat) < lines and time.monotonic() < deadline:
            data = f.read()
            if not data:
                time.sleep(0.01)
                continue
            now = time.time()
            *whole, buf = (buf + data).split(b"\n")
            lat.extend(now - float(w.split(b" ", 2)[1]) for w in whole)
    return {"lines": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99)} if lat else {"lines": 0}


# --- the dashboard following the program ------------------------------------------
async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def _ticker(stalls: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.005)
        stalls.append(loop.time() - t0 - 0.005)


def _spawn_worker(base: Path, address: str, token: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "corral", "worker", "--master", address]
    cmd += ["--name", "bench", "--root", str(base / "node")]
    log = open(base / "worker.out", "wb")  # noqa: SIM115
    with log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, CORRAL_TOKEN=token)
        )


async def _follow(base: Path) -> dict[str, Any]:
    from corral.tui.app import CorralApp

    master = Master(
        MasterConfig(state_dir=base / "master", listen="127.0.0.1:0", api="127.0.0.1:0")
    )
    # One tuple per piece or repaint, so that what the benchmark keeps adds
    # little to the garbage collector's work in the app.
    pieces: list[tuple[float, int, bytes]] = []  # (wall time, offset, data) taken in
    flushes: list[tuple[float, int]] = []  # (wall time, bytes on screen) per repaint
    stalls: list[float] = []
    worker = None
    pauses: list[float] = []
    with FrameTimer() as frames, GcTimer(pauses):
        app = CorralApp(master)
        FrameTimer.encode_frames(app)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(lambda: master.listen_address, 10, "the master")
            worker = _spawn_worker(base, master.listen_address, master.token)
            try:
                await _until(lambda: master.cluster.node_state("bench") == "alive", 20, "worker")
                argv = [sys.executable, "-c", PROGRAM, str(LINES), str(RATE), str(DELAY)]
                launched = await master.launch(argv, nodes=["bench"], app="logbench")
                proc = launched.procs[0]
                path = base / "node" / "apps" / "logbench" / "logs" / f"{proc.launch}.log"
                ref = subprocess.Popen(
                    [sys.executable, "-m", "bench.log_pane", "tail", str(path), str(LINES)],
                    stdout=subprocess.PIPE,
                )
                dash = app.dashboard
                await _until(lambda: proc.key in dash.procs.rows, 5, "the process row")
                pane = dash.log_pane
                take, flush = pane._piece, pane._flush

                def counting_piece(piece: Any) -> None:
                    pieces.append((time.time(), piece.offset, piece.data))
                    take(piece)

                def timed_flush() -> None:
                    flush()
                    flushes.append((time.time(), pane._end + len(pane._partial)))

                pane._piece = counting_piece  # type: ignore[method-assign]
                pane._flush = timed_flush  # type: ignore[method-assign]
                dash.procs.select(proc.key)
                await _until(lambda: pane.key == proc.key, 5, "the pane to follow")
                stop = asyncio.Event()
                ticker = asyncio.create_task(_ticker(stalls, stop))
                del frames.frames[:], frames.walls[:], pauses[:]
                await _until(lambda: pane._ended, SECONDS + 30, "the end marker in the pane")
                await pilot.pause(0.3)
                stop.set()
                await ticker
                reference = json.loads(ref.communicate(timeout=30)[0] or b"{}")
            finally:
                worker.terminate()
                worker.wait(10)
    joined, contiguous = _join(pieces)
    return {
        "file": path.read_text().splitlines(),
        "ingested": joined.decode().splitlines(),
        "contiguous": contiguous,
        "counted": pane.ingested,
        "ingest_lat": _piece_latencies(pieces),
        "written": _written(joined, pieces, flushes),
        "frames": list(frames.frames),
        "frame_walls": list(frames.walls),
        "stalls": stalls,
        "gc": pauses,
        "reference": reference,
    }


def _join(pieces: list[tuple[float, int, bytes]]) -> tuple[bytes, bool]:
    """The stream's bytes joined by offset; whether they ran on without gap or overlap."""
    out, at, ok = bytearray(), None, True
    for _, offset, data in pieces:
        if at is None:
            at = offset
        ok &= offset == at
        out += data
        at = offset + len(data)
    return bytes(out), ok


def _piece_latencies(pieces: list[tuple[float, int, bytes]]) -> list[float]:
    """Per program line: from its stamp to the pane taking in the piece that ended it."""
    out: list[float] = []
    rest = b""
    for at, _, data in pieces:
        *whole, rest = (rest + data).split(b"\n")
        for text in whole:
            parts = text.split(b" ", 2)
            if len(parts) == 3 and parts[0].isdigit():
                out.append(at - float(parts[1]))
    return out


def _written(
    joined: bytes, pieces: list[tuple[float, int, bytes]], flushes: list[tuple[float, int]]
) -> list[tuple[float, str]]:
    """(repaint time, the lines it put on screen) per repaint that brought any."""
    out, done = [], pieces[0][1] if pieces else 0
    base = done
    for at, end in flushes:
        if end > done:
            chunk = joined[done - base : end - base]
            cut = chunk.rfind(b"\n") + 1 if not chunk.endswith(b"\n") else len(chunk)
            if cut:
                out.append((at, chunk[:cut].decode().rstrip("\n")))
                done += cut
    return out


def _latencies(written: list[tuple[float, str]], walls: list[float]) -> list[float]:
    """Per program line: from its stamp to the end of the first frame after its write."""
    out, k = [], 0
    for at, lines in written:
        while k < len(walls) and walls[k] < at:
            k += 1
        shown = walls[k] if k < len(walls) else float("inf")
        for text in lines.split("\n"):
            parts = text.split(" ", 2)
            if len(parts) == 3 and parts[0].isdigit():
                out.append(shown - float(parts[1]))
    return out


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_follow(Path(tmp)))
    file_lines = got["file"]
    program = [x for x in got["ingested"] if x[:1].isdigit()]
    seqs = [int(x.split(" ", 1)[0]) for x in program]
    in_order = seqs == list(range(len(seqs)))
    lost = len(file_lines) - len(program)
    lat = _latencies(got["written"], got["frame_walls"])
    frames, stalls, ref = got["frames"], got["stalls"], got["reference"]
    ingest, pauses = got["ingest_lat"], got["gc"]
    ms = 1000
    worst_frame, worst_stall = max(frames) * ms, max(stalls) * ms
    p99 = pct(lat, 99) * ms if lat else float("inf")
    ref_text = (
        f"tail loop on the file read {ref['lines']} lines, latency p50 "
        f"{ref['p50'] * ms:.0f} ms, p99 {ref['p99'] * ms:.0f} ms"
        if ref.get("lines")
        else "tail loop read nothing"
    )
    rate = f"{len(file_lines)} lines at {RATE} lines/s"
    return [
        line(
            f"log pane frames while ingesting ({rate})",
            f"frame p50 {pct(frames, 50) * ms:.1f} ms, p99 {pct(frames, 99) * ms:.1f} ms, "
            f"max {worst_frame:.1f} ms over {len(frames)} frames; "
            f"event loop worst stall {worst_stall:.1f} ms; {len(pauses)} full GC pauses"
            + (f" (worst {max(pauses) * ms:.0f} ms)" if pauses else ""),
            ref_text,
            f"every frame < {FRAME_MS:g} ms",
            worst_frame < FRAME_MS,
        ),
        line(
            "log pane lines lost (the worker's log file is the reference)",
            f"{lost} lost of {len(file_lines)}, "
            f"{'in order, none twice' if in_order and got['contiguous'] else 'OUT OF ORDER'} "
            f"(the pane's own count: {got['counted']} with its end marker)",
            f"{len(file_lines)} lines in the file on the worker",
            "0 lost",
            lost == 0 and in_order and got["contiguous"] and len(file_lines) == LINES,
        ),
        line(
            "log pane latency, line written to line on screen",
            f"p50 {pct(lat, 50) * ms:.0f} ms, p99 {p99:.0f} ms over {len(lat)} lines "
            f"(to the pane's ingest, through the worker's inotify wake-up: p50 "
            f"{pct(ingest, 50) * ms:.0f} ms, p99 {pct(ingest, 99) * ms:.0f} ms)",
            ref_text,
            f"p99 <= {LATENCY_MS:g} ms",
            p99 <= LATENCY_MS,
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["tail"]:
        print(json.dumps(tail(Path(sys.argv[2]), int(sys.argv[3]), SECONDS + 40)))
    else:
        for text in run():
            print(text)
