"""``corral demo``: a master and N local workers, and nothing left behind.

Everything lives in one fresh temporary directory: the master's state dir
and one root per worker.  When ``sshd`` is installed the demo runs a private
one on loopback (`corral.demo_sshd`) and writes the master's ``[ssh]``
config for it, so deploys work as they are.  The workers start once the
master listens.  A pointer file (`corral.client.DemoPointer`) lets
``corral nodes`` in another shell find the demo with nothing exported.  On
Ctrl-C (or SIGTERM / SIGHUP, or q in the dashboard) the demo kills every
program launched under its workers' roots, stops the workers (SIGTERM, then
SIGKILL after a deadline) and its sshd, removes the pointer, and removes
the directory.
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

from corral import demo_sshd
from corral.client import DEFAULT_API, DemoPointer, demo_pointers, proc_stat, start_ticks

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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    st = proc_stat(pid)
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
        me = proc_stat(os.getpid())
        self.born = me[2] if me else 0
        self._watch: asyncio.Task[None] | None = None
        self._lib_prefix = str(self.tmp / "node").encode()
        self.sshd: demo_sshd.DemoSshd | None = None
        self.ssh_problem = ""  # why deploys cannot work in this demo ("" when they can)
        self.pointer: Path | None = None  # the pointer file this demo wrote

    # --- the second shell ------------------------------------------------------------
    def claim_pointer(self) -> Path | None:
        """Leave a pointer to the state dir for the client, unless another live demo has one."""
        start = start_ticks(os.getpid())
        path = demo_pointers()[0]
        current = DemoPointer.read(path)
        if start is None or (current is not None and current.alive):
            return None
        text = DemoPointer(os.getpid(), start, self.state).text()
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return None
        self.pointer = path
        return path

    def release_pointer(self) -> None:
        """Remove the pointer, if it is still this demo's."""
        if self.pointer is None:
            return
        current = DemoPointer.read(self.pointer)
        if current is not None and current.pid == os.getpid():
            with contextlib.suppress(OSError):
                self.pointer.unlink()
        self.pointer = None

    # --- sshd --------------------------------------------------------------------------
    def start_sshd(self) -> None:
        """Run the demo's sshd and point the master's [ssh] config at it, if sshd exists."""
        from corral.master.config import CONFIG_NAME, SshConfig, ssh_table

        self.ssh_problem = demo_sshd.missing()
        if self.ssh_problem:
            self.announce(f"corral demo: {self.ssh_problem}; deploy will not work")
            return
        try:
            self.sshd = demo_sshd.start(self.tmp / "sshd")
        except (demo_sshd.SshdError, OSError) as e:
            self.ssh_problem = f"the demo's sshd did not start: {e}"
            self.announce(f"corral demo: {self.ssh_problem}; deploy will not work")
            return
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        known_hosts = self.state / "known_hosts"
        known_hosts.write_text(self.sshd.host_key_line + "\n")
        # No port here: each demo worker advertises the sshd's (--ssh-port), and a
        # worker that joins the demo from elsewhere keeps its own.
        ssh = SshConfig(self.sshd.user, known_hosts, self.sshd.key)
        (self.state / CONFIG_NAME).write_text(
            f"# written by corral demo: deploys go to its sshd on 127.0.0.1:{self.sshd.port},\n"
            "# the port each of its workers advertises (corral worker --ssh-port)\n"
            + ssh_table(ssh)
        )
        self.announce(
            f"corral demo: sshd for deploys on 127.0.0.1:{self.sshd.port} "
            f"(user {self.sshd.user}, key {self.sshd.key})"
        )

    def reach(self) -> str:
        """What to type in another shell of this user to reach the demo's master."""
        from corral.serve import reach_line

        return reach_line(self.state, pointer=self.pointer is not None)

    def root(self, i: int) -> Path:
        return self.tmp / f"node{i}"

    # --- start ---------------------------------------------------------------------
    def spawn_workers(self, listen: str) -> None:
        """Start the workers against ``listen`` (the master's ready callback)."""
        assert self.master is not None
        env = dict(os.environ, CORRAL_TOKEN=self.master.token)
        env.pop("CORRAL_API", None)
        workers = plural(self.count, "worker")
        self.announce(f"corral demo: {workers} under {self.tmp}; Ctrl-C ends them all")
        self.announce(f"corral demo: in another shell: {self.reach()}")
        ssh: tuple[str, ...] = ()
        if self.sshd is not None:
            ssh = ("--ssh-host", "127.0.0.1", "--ssh-port", str(self.sshd.port))
        for i in range(1, self.count + 1):
            name, root = f"node{i}", self.root(i)
            root.mkdir()
            log = self.tmp / f"{name}.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "corral", "worker", "--master", listen),
                        *("--name", name, "--root", str(root)),
                        *ssh,
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
            st = proc_stat(pid)
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
        self.release_pointer()
        killed = self.kill_programs()
        self.stop_workers()
        killed += self.kill_programs()  # anything launched while the workers were stopping
        if self.sshd is not None:
            self.sshd.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        what = f"{plural(len(self.workers), 'worker')} and {plural(len(set(killed)), 'program')}"
        self.announce(f"corral demo: stopped {what}; removed {self.tmp}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from corral.master.control import Master, MasterConfig
    from corral.serve import load_dashboard, log_to, run_master

    dashboard = load_dashboard(args.config, headless=args.headless)
    on_screen = dashboard is not None  # the dashboard shows what matters; the rest goes after it

    def say(line: str) -> None:
        if not on_screen:
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
        demo.claim_pointer()
        demo.start_sshd()
        shown: dict[str, Any] = {}
        if dashboard is not None:
            problem = demo.ssh_problem
            shown = {"reach": demo.reach(), "demo": True, "deploy_notice": lambda: problem}
        status = run_master(
            master, dashboard, on_ready=demo.spawn_workers, announce=master_says, **shown
        )
    except KeyboardInterrupt:
        status = 0
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        on_screen = False  # the dashboard is gone: the cleanup's line is printed
        try:
            demo.cleanup()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return status
