"""`corral demo --headless`: it comes up, runs programs, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, base_env, corral_argv, pid_gone, run_corral, wait_for


class Lines:
    """A process's stdout, line by line, read on a thread so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.stream = proc.stdout
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                line = self._q.get(timeout=0.05)
                if line is None:
                    return
                self.seen.append(line)

    def wait(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match[str]]:
        """The first ``count`` lines matching ``pattern`` (searching all seen so far)."""

        def found() -> list[re.Match[str]] | None:
            self._drain()
            hits = [m for line in self.seen if (m := re.search(pattern, line))]
            return hits[:count] if len(hits) >= count else None

        return wait_for(found, f"{count} line(s) matching {pattern!r}; saw {self.seen}", timeout)

    def close(self) -> None:
        self._thread.join(10)
        self.stream.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    with open(tmp_path / "demo.err", "w") as err:
        proc = subprocess.Popen(
            corral_argv("demo", "--headless", "--workers", "2"),
            env=base_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines = Lines(proc)
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        lines.close()


def test_demo_starts_workers_and_ctrl_c_leaves_nothing(
    demo: tuple[subprocess.Popen[str], Lines],
) -> None:
    proc, lines = demo
    (api,) = lines.wait(r"control API on http://(\S+)")
    (state,) = lines.wait(r"state in (\S+)")
    workers = lines.wait(r"started worker (node\d) \(pid (\d+)", count=2)
    joined = lines.wait(r"node\.joined\s+(node\d) joined", count=2)
    assert sorted(m.group(1) for m in joined) == ["node1", "node2"]
    tmp = Path(state.group(1)).parent
    assert tmp.name.startswith("corral-demo-")

    env = base_env(CORRAL_STATE_DIR=state.group(1))
    r = run_corral("launch", "--api", api.group(1), "--all", "--", "sleep", "30", env=env)
    assert r.status == 0, r.err
    keys = r.out.split()
    assert sorted(k.split(":")[0] for k in keys) == ["node1", "node2"]
    programs = [int(k.split(":")[1]) for k in keys]
    assert not any(pid_gone(pid) for pid in programs)

    # A shell's command that merely exported the demo's state dir is not the demo's to kill.
    bystander = subprocess.Popen(["sleep", "30"], env=env, stdin=subprocess.DEVNULL)
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    lines.wait(r"corral demo: stopped 2 workers and 2 programs")
    for pid in programs + [int(m.group(2)) for m in workers]:
        assert pid_gone(pid), pid
    assert not tmp.exists()
    # Nor any other process of the demo (the program's shims name the roots in argv).
    needle = str(tmp).encode()
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            assert needle not in (entry / "cmdline").read_bytes(), entry.name
