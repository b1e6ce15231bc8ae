"""``corral demo``: a master and N local workers, and nothing left behind.

Everything lives in one fresh temporary directory: the master's state dir
and one root per worker.  The workers start once the master listens.  On
Ctrl-C (or SIGTERM / SIGHUP) the demo kills every program launched under
its workers' roots, stops the workers (SIGTERM, then SIGKILL after a
deadline), and removes the directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.client import DEFAULT_API

if TYPE_CHECKING:
    from corral.master.control import Master

STOP_DEADLINE = 5.0  # seconds a worker gets to exit after SIGTERM


def _default_api_free() -> bool:
    host, port = DEFAULT_API.split(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, session id, start time in ticks) of a live pid, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    # after "pid (comm) ": state ppid pgrp session ... starttime is field 22 overall
    return fields[0].decode(), int(fields[3]), int(fields[19])


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X")


class Demo:
    """The demo's workers and temporary directory, and their cleanup."""

    def __init__(self, workers: int, announce: Callable[[str], None]) -> None:
        self.count = workers
        self.announce = announce
        self.tmp = Path(tempfile.mkdtemp(prefix="corral-demo-"))
        self.state = self.tmp / "state"
        self.workers: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.master: Master | None = None
        me = _stat(os.getpid())
        self.born = me[2] if me else 0
        self._watch: asyncio.Task[None] | None = None
        self._lib_prefix = str(self.tmp / "node").encode()

    def root(self, i: int) -> Path:
        return self.tmp / f"node{i}"

    # --- start ---------------------------------------------------------------------
    def spawn_workers(self, listen: str) -> None:
        """Start the workers against ``listen`` (the master's ready callback)."""
        assert self.master is not None
        env = dict(os.environ, CORRAL_TOKEN=self.master.token)
        env.pop("CORRAL_API", None)
        self.announce(f"corral demo: {self.count} workers under {self.tmp}; Ctrl-C ends them all")
        self.announce(
            f"corral demo: in another shell: export CORRAL_STATE_DIR={self.state}; corral nodes"
        )
        for i in range(1, self.count + 1):
            name, root = f"node{i}", self.root(i)
            root.mkdir()
            log = self.tmp / f"{name}.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "corral", "worker", "--master", listen),
                        *("--name", name, "--root", str(root)),
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
                )
            self.workers.append((name, proc))
            self.announce(f"corral demo: started worker {name} (pid {proc.pid}, log {log})")
        with contextlib.suppress(RuntimeError):
            self._watch = asyncio.get_running_loop().create_task(self._watch_workers())

    async def _watch_workers(self) -> None:
        """Say so when a worker dies on its own (its log tells why)."""
        reported: set[str] = set()
        while len(reported) < len(self.workers):
            await asyncio.sleep(0.5)
            for name, proc in self.workers:
                if name not in reported and proc.poll() is not None:
                    reported.add(name)
                    log = self.tmp / f"{name}.log"
                    self.announce(f"corral demo: worker {name} exited ({proc.returncode}): {log}")

    # --- stop ----------------------------------------------------------------------
    def _records(self) -> Iterator[dict[str, Any]]:
        """The workers' launch records (``ROOT/run/<launch>.json``, see daemon/records.py)."""
        for i in range(1, self.count + 1):
            for path in sorted((self.root(i) / "run").glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    record = json.loads(path.read_bytes())
                    if isinstance(record, dict):
                        yield record

    def _programs(self) -> dict[int, int | None]:
        """Pids that may be programs launched under the demo, with their start ticks if known."""
        found: dict[int, int | None] = {}
        if self.master is not None:
            for p in self.master.cluster.procs(include_ended=False):
                found.setdefault(p.pid, None)
        for rec in self._records():
            if isinstance(rec.get("pid"), int) and isinstance(rec.get("start"), int):
                found[rec["pid"]] = rec["start"]
        # Anything else started with one of our app lib dirs on LD_LIBRARY_PATH (the worker
        # sets ROOT/apps/APP/lib), such as a program's own children in another group.
        # Only that variable counts: a shell that exported CORRAL_STATE_DIR is not ours.
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError):
                if self._launched_here((entry / "environ").read_bytes()):
                    found.setdefault(int(entry.name), None)
        for pid in {os.getpid()} | {proc.pid for _, proc in self.workers}:
            found.pop(pid, None)
        return found

    def _launched_here(self, environ: bytes) -> bool:
        for var in environ.split(b"\0"):
            if var.startswith(b"LD_LIBRARY_PATH="):
                paths = var.removeprefix(b"LD_LIBRARY_PATH=").split(b":")
                return any(p.startswith(self._lib_prefix) for p in paths)
        return False

    def _kill(self, pids: dict[int, int | None]) -> list[int]:
        """SIGKILL each pid that is still the one we mean (its group if it leads a session)."""
        killed = []
        for pid, start in pids.items():
            st = _stat(pid)
            if st is None or st[0] in ("Z", "X"):
                continue
            same = st[2] == start if start is not None else st[2] >= self.born
            if not same:
                continue  # the pid was reused: not ours whatever the number says
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if st[1] == pid:
                    os.killpg(pid, signal.SIGKILL)  # its own session: the whole group
                else:
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed

    @staticmethod
    def _wait_gone(pids: Iterable[int], deadline: float) -> bool:
        pids = list(pids)
        while not all(gone(pid) for pid in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def kill_programs(self) -> list[int]:
        """Kill every live program of the demo, then make sure their shims end too."""
        killed = self._kill(self._programs())
        self._wait_gone(killed, time.monotonic() + STOP_DEADLINE)
        # A shim (the program's recording parent) exits once its program has;
        # one that lingers is killed too.
        shims = {
            rec["shim"]: rec.get("shim_start")
            for rec in self._records()
            if isinstance(rec.get("shim"), int) and isinstance(rec.get("shim_start"), int)
        }
        if not self._wait_gone(shims, time.monotonic() + 1.0):
            self._kill(shims)
            self._wait_gone(shims, time.monotonic() + STOP_DEADLINE)
        return killed

    def stop_workers(self) -> None:
        for _, proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + STOP_DEADLINE
        for _, proc in self.workers:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        """Leave nothing behind: programs first (their workers reap them), then workers."""
        killed = self.kill_programs()
        self.stop_workers()
        killed += self.kill_programs()  # anything launched while the workers were stopping
        shutil.rmtree(self.tmp, ignore_errors=True)
        what = f"{len(self.workers)} workers and {len(set(killed))} programs"
        self.announce(f"corral demo: stopped {what}; removed {self.tmp}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from corral.master.control import Master, MasterConfig
    from corral.serve import load_dashboard, log_to, run_master

    dashboard = None if args.headless else load_dashboard()

    def say(line: str) -> None:
        if dashboard is None:
            print(line, flush=True)

    def master_says(line: str) -> None:
        if not line.startswith("corral master: stopped"):  # the demo says what it stopped
            say(line)

    demo = Demo(args.workers, say)
    api = DEFAULT_API if _default_api_free() else "127.0.0.1:0"
    master = Master(MasterConfig(listen="127.0.0.1:0", api=api, state_dir=demo.state))
    demo.master = master
    log_to(None if dashboard is None else demo.tmp / "master.log")
    # SIGTERM and SIGHUP end the demo like Ctrl-C (the headless master handles SIGTERM itself).
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    status = 1
    try:
        status = run_master(master, dashboard, on_ready=demo.spawn_workers, announce=master_says)
    except KeyboardInterrupt:
        status = 0
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        try:
            demo.cleanup()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return status
