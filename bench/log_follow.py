"""The dashboard following a slow log: its CPU, against the idle dashboard.

`corral master` runs with its dashboard on a pseudo-terminal (120x40, the
output drained as a terminal would read it) and one real worker.  First
the idle dashboard's CPU share over `WINDOW` s (the reference, same run);
then a `sh` loop printing 5 lines a second is launched and selected, so the
log pane follows it, and the dashboard's CPU share over `WINDOW` s again.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil

from bench.cluster import wait_until
from bench.heartbeat import cpu_share
from bench.report import line

WINDOW = 20.0
TARGET = 0.03
LOOP = (
    "i=0; while :; do i=$((i+1)); echo line $i from a program that logs 5 lines/s; sleep 0.2; done"
)


class Screen:
    """The pty's output, drained by a thread; ``seen(text)`` since the last ``mark``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.buf += data
                del self.buf[: max(0, len(self.buf) - (1 << 20))]

    def mark(self) -> None:
        with self.lock:
            self.buf.clear()

    def seen(self, text: str) -> bool:
        with self.lock:
            return text.encode() in self.buf


def _corral(state: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "corral", *args[:1], "--state-dir", str(state), *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout


def measure(tmp: Path) -> tuple[float, float, bool]:
    """(idle share, following share, whether the pane showed the program's lines)."""
    state = tmp / "state"
    cmd = [sys.executable, "-m", "corral", "master", "--listen", "127.0.0.1:0"]
    cmd += ["--api", "127.0.0.1:0", "--state-dir", str(state)]
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40")
    mfd, sfd = pty.openpty()
    fcntl.ioctl(sfd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    master = subprocess.Popen(
        cmd, stdin=sfd, stdout=sfd, stderr=sfd, env=env, start_new_session=True
    )
    os.close(sfd)
    screen = Screen(mfd)
    worker, key = None, ""
    try:
        wait_until(lambda: (state / "listen").exists() and (state / "token").exists(), 20, "master")
        time.sleep(0.2)
        address = (state / "listen").read_text().strip()
        token = (state / "token").read_text().strip()
        worker_cmd = [sys.executable, "-m", "corral", "worker", "--master", address]
        worker_cmd += ["--name", "bench", "--root", str(tmp / "node")]
        worker = subprocess.Popen(
            worker_cmd,
            env=dict(os.environ, CORRAL_TOKEN=token),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: "alive" in _corral(state, "nodes"), 30, "the worker")
        proc = psutil.Process(master.pid)
        time.sleep(3.0)  # start-up behind us
        idle = cpu_share(proc, WINDOW)
        out = _corral(state, "launch", "--node", "bench", "--app", "loop", "--", "sh", "-c", LOOP)
        key = out.strip()
        assert key, "launch printed nothing"
        time.sleep(1.0)
        os.write(mfd, b"\x1b[B")  # down: the new row selected, its log in the pane
        screen.mark()
        wait_until(lambda: screen.seen("from a program"), 10, "the log in the pane")
        time.sleep(2.0)
        screen.mark()
        following = cpu_share(proc, WINDOW)
        shown = screen.seen("from a program")
    finally:
        if key:  # the loop never ends on its own; workers leave programs running
            _corral(state, "kill", key)
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        master.terminate()
        try:
            master.wait(10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        os.close(mfd)
    return idle, following, shown


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        idle, following, shown = measure(Path(tmp))
    return [
        line(
            "dashboard following a 5 lines/s log (120x40 pty, 1 worker)",
            f"CPU {following * 100:.1f}% of a core over {WINDOW:g} s"
            + ("" if shown else " (THE LOG WAS NOT ON SCREEN)"),
            f"the same dashboard idle {idle * 100:.1f}%",
            f"<= {TARGET * 100:g}% of a core",
            following <= TARGET and shown,
        )
    ]


if __name__ == "__main__":
    for text in run():
        print(text)
