"""CPU time counts a program's descendants, live and at the end, the same way.

A shell loop spends its time in the children it forks: the live figure
must grow with it, and the figure at the end must not jump above what was
shown just before (issue 11, item 7).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from corral.daemon import procfs
from corral.transport import messages as m
from tests.daemon.harness import FakeMaster, wait_for

FLOOR = 0.3  # CPU seconds the live figure must reach while the program runs
# What the end may add to the last live figure: at most the elapsed time
# (the loop runs one process at a time) and a little slack for clock ticks.
FACTOR = 1.5
SLACK = 0.05


def _live(master: FakeMaster, pid: int) -> list[float]:
    """CPU user+sys of every heartbeat sample of ``pid`` so far, oldest first."""
    return [s.cpu_user + s.cpu_sys for b in master.beats for s in b.procs if s.pid == pid]


async def _run_and_kill(master: FakeMaster, spawn_worker, *argv: str) -> None:
    spawn_worker(master.port)
    await master.connected()
    reply = await master.call(lambda i: m.Launch(id=i, app="demo", argv=list(argv)))
    pid = reply.proc.pid
    # Growing beat by beat (three different figures above zero), not in one step.
    figures = await wait_for(
        lambda: (s := _live(master, pid)) and s[-1] >= FLOOR and len(set(s) - {0.0}) >= 3 and s,
        timeout=30,
        what=f"three growing live CPU figures up to {FLOOR} s",
    )
    assert figures == sorted(figures), figures  # never goes back
    last, at = figures[-1], time.monotonic()
    killed = await master.call(lambda i: m.Signal(id=i, pid=pid, signal="SIGKILL"))
    assert killed.delivered
    ended = await wait_for(lambda: master.ended(pid), timeout=10, what="the end")
    elapsed = time.monotonic() - at
    final = ended.cpu_user + ended.cpu_sys
    assert final >= last, (final, last)
    assert final <= FACTOR * (last + elapsed) + SLACK, (final, last, elapsed)


async def test_shell_loop_of_short_children_counts_them_live(master, spawn_worker):
    # Each /bin/true ends at once: its time is the shell's children time.
    await _run_and_kill(master, spawn_worker, "sh", "-c", "while :; do /bin/true; done")


async def test_busy_child_counts_while_it_runs(master, spawn_worker):
    # The outer shell waits on a child that never ends: only a walk of the
    # tree sees that child's time; killed, it is orphaned and wait4 never
    # reports it, yet the end keeps what was shown.
    inner = "while :; do :; done"
    await _run_and_kill(master, spawn_worker, "sh", "-c", f"sh -c '{inner}'; echo done")


def _busy_tree(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def _wait_cpu(pid: int, floor: float, timeout: float = 20.0) -> procfs.Cpu:
    deadline = time.monotonic() + timeout
    while True:
        st = procfs.stat(pid)
        assert st is not None
        cpu = procfs.tree_cpu(pid, st)
        if cpu.user + cpu.sys >= floor:
            return cpu
        assert time.monotonic() < deadline, f"tree CPU stayed at {cpu}"
        time.sleep(0.05)


def test_tree_cpu_reads_children_of_every_thread():
    # The child is forked from a second thread: it is that thread's child.
    script = (
        "import subprocess, threading, time\n"
        "def spawn():\n"
        "    subprocess.run(['sh', '-c', 'while :; do :; done'])\n"
        "threading.Thread(target=spawn, daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    proc = _busy_tree(script)
    try:
        cpu = _wait_cpu(proc.pid, FLOOR)
        own = procfs.stat(proc.pid)
        assert own is not None and own.threads >= 2
        assert cpu.user + cpu.sys > own.utime + own.stime + own.cutime + own.cstime
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_tree_cpu_is_bounded(monkeypatch):
    # A process with more descendants than the limit is read up to the limit.
    script = (
        "import subprocess, time\n"
        "kids = [subprocess.Popen(['sleep', '60']) for _ in range(6)]\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        st = procfs.stat(proc.pid)
        assert st is not None
        assert len(procfs.children(proc.pid, st.threads)) == 6
        reads: list[str] = []
        real = procfs._read

        def counting(path: str) -> bytes | None:
            reads.append(path)
            return real(path)

        monkeypatch.setattr(procfs, "_read", counting)
        procfs.tree_cpu(proc.pid, st, limit=3)
        assert sum(p.endswith("/stat") for p in reads) == 2  # the top was read by the caller
    finally:
        os.killpg(proc.pid, 9)
        proc.communicate()
