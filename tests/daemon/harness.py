"""A fake master and a real worker process, for the daemon's tests.

`FakeMaster` is an asyncio TLS server on 127.0.0.1 port 0, with a real CA
(`corral.master.ca`), that enrolls workers and runs the real handshake,
records what the worker sends (Register, Heartbeat, ProcEvent, follow
LogChunks, Goodbye) and lets a test send requests with `call`.
`WorkerProcess` runs ``python -m corral.daemon`` as a real child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from corral.daemon import procfs, records
from corral.daemon.supervisor import Proc, Supervisor
from corral.master.ca import CA
from corral.transport import auth, handshake, tls
from corral.transport import messages as m
from corral.transport.codec import FrameError
from corral.transport.connection import Calls, Connection, ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
ILLEGAL = "illegal process state change"  # what daemon.states logs for an edge it refuses
TOKEN = "test-token-" + "ab" * 16
LAUNCHED: dict[int, int] = {}  # pid -> start ticks of every program launched, for cleanup


async def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        await asyncio.sleep(0.02)


class FakeMaster:
    """Accepts workers with the real handshake and records what they send."""

    def __init__(self, token: str = TOKEN, heartbeat: float = 0.2) -> None:
        self.token = token
        self.heartbeat = heartbeat
        self.port = 0
        self.registers: list[m.Register] = []
        self.beats: list[m.Heartbeat] = []
        self.beat_times: list[float] = []  # time.time() as each beat arrived
        self.beat_window = 0.0  # announced in the Welcome (transport.beats)
        self.events: list[m.ProcInfo] = []
        self.chunks: dict[int, list[m.LogChunk]] = defaultdict(list)
        self.goodbyes: list[m.Goodbye] = []
        self.refusals: list[str] = []
        self.others: list[m.Message] = []
        self.admit: Callable[[str], str | None] = lambda name: None
        self.pong = True  # answer beats (a worker that hears nothing for 2H reconnects)
        self.conn: Connection | None = None
        self.calls = Calls()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.ca = CA(Path(tempfile.mkdtemp(prefix="corral-fake-ca-")))
        self.enrolled: list[str] = []

    async def start(self, port: int = 0) -> FakeMaster:
        self.ca.open()
        self.ca.write_server_cert(["127.0.0.1"])
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", port, ssl=self.ca.channel_context()
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def drop(self) -> None:
        """Close the current worker connection (the worker should come back)."""
        if self.conn is not None:
            await self.conn.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(reader, writer)
        try:
            peer = tls.peer_of(writer.get_extra_info("ssl_object"))
            if peer is None:  # enrollment, as the real master does it
                sign = lambda name, csr: (self.ca.sign_node(name, csr), self.ca.cert_der)  # noqa: E731
                self.enrolled.append(
                    await handshake.accept_enroll(conn, self.token, sign, self.admit)
                )
                return
            await handshake.accept_channel(
                conn, peer.name, self.heartbeat, self.admit, beat_window=self.beat_window
            )
            self.conn = conn
            while True:
                msg = await conn.recv()
                if isinstance(msg, m.Heartbeat) and self.pong:
                    conn.send_nowait(m.Pong(seq=msg.seq))  # as the master does
                self._record(msg)
        except (auth.AuthError, FrameError, ConnectionClosed) as e:
            if isinstance(e, auth.AuthError):
                self.refusals.append(str(e))
        finally:
            if self.conn is conn:
                self.conn = None
                self.calls.fail_all("worker gone")
            await conn.close()
            self._tasks.discard(task)

    def _record(self, msg: m.Message) -> None:
        if self.calls.resolve(msg):
            return
        if isinstance(msg, m.Register):
            self.registers.append(msg)
        elif isinstance(msg, m.Heartbeat):
            self.beats.append(msg)
            self.beat_times.append(time.time())
        elif isinstance(msg, m.ProcEvent):
            self.events.append(msg.proc)
        elif isinstance(msg, m.LogChunk):
            self.chunks[msg.id].append(msg)
        elif isinstance(msg, m.Goodbye):
            self.goodbyes.append(msg)
        else:
            self.others.append(msg)

    async def connected(self, registers: int = 1, timeout: float = 15.0) -> m.Register:
        """Wait for the ``registers``-th Register; return it.

        (A first start enrolls, with a child process making the key: on a
        loaded machine that alone can take seconds.)
        """
        await wait_for(lambda: len(self.registers) >= registers and self.conn, timeout, "register")
        return self.registers[registers - 1]

    async def call(self, make: Any, timeout: float = 10.0) -> Any:
        """Send a request built by ``make(id)``; its reply (CallError on Error)."""
        assert self.conn is not None, "no worker connected"
        reply = await self.calls.call(self.conn, make, object, timeout)  # any reply type
        if isinstance(reply, m.Launched):
            st = procfs.stat(reply.proc.pid)
            if st is not None:
                LAUNCHED[reply.proc.pid] = st.start
        return reply

    async def send_raw(self, msg: m.Message) -> None:
        assert self.conn is not None
        await self.conn.send(msg)

    def ended(self, pid: int) -> m.ProcInfo | None:
        """The ProcEvent saying ``pid`` ended, if one came."""
        for info in self.events:
            if info.pid == pid and not info.alive:
                return info
        return None


class WorkerProcess:
    """``python -m corral.daemon`` as a real process, its stderr in a file."""

    def __init__(
        self,
        port: int,
        root: Path,
        name: str = "w1",
        token: str = TOKEN,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        self.root = root
        self.name = name
        self.token = token
        self.args = args  # more command-line options (``--mem 250M``)
        self.log_path = root.parent / f"{name}-{time.monotonic_ns()}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "corral.daemon",
            "--master",
            f"127.0.0.1:{self.port}",
            "--root",
            str(self.root),
            "--name",
            self.name,
            *self.args,
        ]

    def start(self) -> WorkerProcess:
        # Strict: an illegal process state change raises in the worker, and
        # its log line fails the test (see conftest's spawn_worker).
        env = {
            **os.environ,
            "CORRAL_TOKEN": self.token,
            "PYTHONUNBUFFERED": "1",
            "CORRAL_STRICT_STATES": "1",
        }
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv(), cwd=REPO, env=env, stdin=subprocess.DEVNULL, stderr=err
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal the worker and reap it; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def kill_programs(root: Path) -> list[int]:
    """SIGKILL the process group of every still-running program under ``root``."""
    killed = []
    for rec in records.launch_records(root / "run"):
        # Some tests write records naming this very process: never our own group.
        if rec.pid != os.getpid() and procfs.is_same(rec.pid, rec.start):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rec.pid, signal.SIGKILL)
            killed.append(rec.pid)
    # A launch replied to a moment ago may not have its record on disk yet.
    for pid, start in LAUNCHED.items():
        if pid not in killed and procfs.is_same(pid, start):  # pid and start: never a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def reap_orphans(root: Path, timeout: float = 5.0) -> None:
    """Reap the shims and programs under ``root`` that were reparented to us.

    The test process is a child subreaper (see conftest), so when a worker or
    a shim dies its orphans become our children; without this they would
    linger as zombies.  Only processes of our programs' groups are touched.
    """
    recs = records.launch_records(root / "run")
    shims = {rec.shim for rec in recs}
    groups = {rec.pid for rec in recs} | set(LAUNCHED)  # each program leads its own group
    groups.discard(os.getpid())  # a record naming this process (see kill_programs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process().children():
            with contextlib.suppress(OSError):
                if child.pid in shims or os.getpgid(child.pid) in groups:
                    os.waitpid(child.pid, os.WNOHANG)
        if not any(_group_exists(g) for g in groups) and not any(map(_is_child, shims)):
            LAUNCHED.clear()
            return
        time.sleep(0.01)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_child(pid: int) -> bool:
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.Error:
        return False


async def launch_in(sup: Supervisor, *argv: str, app: str = "demo") -> Proc:
    """Launch ``argv`` with an in-process supervisor; its process once it has execed."""
    launch = (await sup.launch(app, list(argv), {})).launch
    proc = sup.procs[launch]
    LAUNCHED[proc.rec.pid] = proc.rec.start  # killed at teardown
    await wait_for(lambda: proc.report is None, what="the exec")
    return proc


async def ended(proc: Proc, timeout: float = 10.0) -> m.ProcInfo:
    """``proc``'s info once the supervisor has seen it end."""
    await asyncio.wait_for(proc.ended.wait(), timeout)
    return proc.info


def exited_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
