"""One authenticated connection to the master: register, beat, serve requests.

A session starts after the handshake and ends when the connection does
(EOF, a bad frame, a failed send, or 2H without a word from the master,
who answers every beat); the worker then reconnects and opens a new one,
which registers the full state again.

A request that arrives after its deadline (the master's clock, read through
the ``Welcome.now`` of this session's handshake) is dropped and logged:
the master has reported it failed, so it must not happen now.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from corral.daemon import keygen
from corral.daemon.commands import Handlers
from corral.daemon.fence import Fence
from corral.daemon.store import AppStore
from corral.daemon.supervisor import Supervisor
from corral.transport import beats, tls
from corral.transport import messages as m
from corral.transport.connection import Connection, ConnectionClosed

Log = Callable[[str], None]
RENEW_ID = 1 << 62  # the id of the worker's own Renew request (the master's ids count up from 1)
RENEW_GAP = 600.0  # seconds (monotonic) between two renewal attempts, whatever clocks say


@dataclass
class Node:
    """What a session needs of its worker: identity, supervisor, store, log."""

    name: str
    root: Path
    ssh_host: str | None
    ssh_port: int
    version: str
    sup: Supervisor
    store: AppStore
    log: Log
    mem_offer: int = 0  # bytes this node offers to jobs (``corral worker --mem``)
    # Launches by the operator's request key, across sessions: a retry to a
    # restarted master gets the first launch's process, not a second one.
    launch_keys: OrderedDict[str, asyncio.Future[m.ProcInfo]] = field(default_factory=OrderedDict)
    # The node's certificate files (None: no renewal), the wall clock that says
    # when a certificate is due (tests move it), and when renewing may next be tried.
    certs: tls.NodeFiles | None = None
    clock: Callable[[], float] = time.time
    renew_not_before: float = 0.0  # monotonic
    fence: Fence | None = None  # the highest leader term seen (masters on etcd)

    def facts(self, ssh_host: str) -> m.NodeFacts:
        return m.NodeFacts(
            name=self.name,
            hostname=socket.gethostname(),
            cpus=os.cpu_count() or 1,
            mem_total=psutil.virtual_memory().total,
            boot_id=self.sup.boot_id,
            ssh_host=self.ssh_host or ssh_host,
            ssh_port=self.ssh_port,
            root=str(self.root),
            pid=os.getpid(),
            version=self.version,
            kernel=os.uname().release,
            mem_offer=self.mem_offer,
        )

    def metrics(self) -> m.Metrics:
        vm = psutil.virtual_memory()
        return m.Metrics(
            cpu_percent=psutil.cpu_percent(None),
            mem_used=vm.used,
            mem_total=vm.total,
            load1=os.getloadavg()[0],
            apps=len(self.store.apps()),
            procs_alive=len(self.sup.alive()),
        )


class Session:
    """Serve the master over ``conn`` until the connection ends (then raise)."""

    def __init__(
        self,
        node: Node,
        conn: Connection,
        heartbeat: float,
        master_now: float = 0.0,
        beat_window: float = 0.0,
    ) -> None:
        """``master_now``: the master's clock in the Welcome, received just now;
        ``beat_window``: where on that clock to beat (see `transport.beats`)."""
        self.node = node
        self.conn = conn
        self.heartbeat = heartbeat
        self.beat_offset: float | None = None  # no grid: an older master, or no usable window
        if 0 < beat_window < math.inf:
            self.beat_offset = beats.offset(node.name, min(beat_window, heartbeat))
        self.handlers = Handlers(
            node.sup, node.store, conn.send, node.log, node.launch_keys, conn.send_nowait
        )
        self._requests: set[asyncio.Task[None]] = set()
        # Master clock -> our loop clock, which no wall-clock step can move.
        self._skew = asyncio.get_running_loop().time() - master_now if master_now else None
        self._renew_at = self._renew_time()
        self._renewing = False

    async def run(self) -> None:
        """Register, then beat and serve; raises `ConnectionClosed`/`FrameError` at the end."""
        local = self.conn.writer.get_extra_info("sockname")
        register = m.Register(
            facts=self.node.facts(local[0] if isinstance(local, tuple) else ""),
            procs=self.node.sup.infos(),
            apps=self.node.store.apps(),
        )
        await self.conn.send(register)
        self.node.sup.on_change = self._proc_changed
        loops = [asyncio.create_task(self._receive()), asyncio.create_task(self._beat())]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise why the session ended
        finally:
            self.node.sup.on_change = None
            await self._cancel(loops + list(self._requests))
            await self.handlers.close()

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self) -> None:
        silence = 2 * self.heartbeat  # the master answers every beat: this long is a dead link
        while True:
            try:
                async with asyncio.timeout(silence):
                    msg = await self.conn.recv()
            except TimeoutError:
                msg = await self._last_look(silence)
            self._dispatch(msg)

    async def _last_look(self, silence: float) -> m.Message:
        """A frame that arrived as the silence timer fired, else the end of the session.

        When this process was frozen (SIGSTOP, a stalled VM), the timer and
        the bytes that queued meanwhile wake it together: those frames are
        read, and late ones dropped with a log line, before it gives up.
        """
        try:
            async with asyncio.timeout(min(0.1, self.heartbeat / 4)):
                return await self.conn.recv()
        except TimeoutError:
            raise ConnectionClosed(f"no word from the master for {silence:g}s") from None

    def _dispatch(self, msg: m.Message) -> None:
        if isinstance(msg, m.Pong):
            return  # its arrival was the point
        if isinstance(msg, m.Renewed | m.Error) and msg.id == RENEW_ID:
            self._renewed(msg)
            return
        if isinstance(msg, m.Goodbye):
            raise ConnectionClosed(f"master said goodbye: {msg.reason or 'no reason'}")
        if not hasattr(msg, "id"):
            self.node.log(f"ignoring unexpected {type(msg).__name__} from master")
            return
        if isinstance(msg, m.Request) and self._fenced(msg):
            return
        late = self._lateness(msg.deadline) if isinstance(msg, m.Request) else 0.0
        if late > 0:
            what = f"{type(msg).__name__} {getattr(msg, 'id', '?')}"
            self.node.log(f"dropped {what}: it arrived {late:.1f}s after its deadline")
            return
        # Each request runs in its own task: a slow one (rm --force, hashing)
        # must not hold up heartbeats or other requests.
        task = asyncio.create_task(self.handlers.handle(msg))
        self._requests.add(task)
        task.add_done_callback(self._request_done)

    def _fenced(self, msg: m.Request) -> bool:
        """A request of an older term than one seen: refused, with one line in the log."""
        fence = self.node.fence
        why = fence.refusal(msg.term) if fence is not None else ""
        if not why:
            return False
        self.node.log(f"refused {type(msg).__name__} {msg.id}: {why}")
        with contextlib.suppress(ConnectionClosed):
            self.conn.send_nowait(m.Error(id=msg.id, message=f"refused by the worker: {why}"))
        return True

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._requests.discard(task)
        if not task.cancelled() and isinstance(task.exception(), Exception):
            # Only a failed send gets here; the receive loop sees the same end.
            self.node.log(f"reply not sent: {task.exception()}")

    def _lateness(self, deadline: float) -> float:
        """Seconds past ``deadline`` (the master's clock) now; <= 0 while in time."""
        if not deadline or self._skew is None:
            return 0.0
        return asyncio.get_running_loop().time() - (deadline + self._skew)

    async def _beat(self) -> None:
        """A heartbeat every H, on a fixed schedule so beats do not drift: the
        master's grid (`transport.beats`) when it gave its clock."""
        loop = asyncio.get_running_loop()
        h, at = self.heartbeat, self.beat_offset
        skew = self._skew if at is not None else None
        due = loop.time() if skew is None else loop.time() - h  # on the grid: the next slot
        seq = 0
        while True:
            if skew is None:
                due = max(due + h, loop.time())  # after a stall: no burst
            else:  # the slot after the last one, or after now when late (no burst)
                assert at is not None
                due = beats.next_beat(max(due + h / 2, loop.time()), skew, h, at)
            await asyncio.sleep(max(0.0, due - loop.time()))
            seq += 1
            if seq % 64 == 0:
                self.node.sup.prune()  # ended processes past the history's age
            beat = m.Heartbeat(seq=seq, metrics=self.node.metrics(), procs=self.node.sup.samples())
            await self.conn.send(beat)
            self._maybe_renew()

    # --- certificate renewal -------------------------------------------------
    def _renew_time(self) -> float | None:
        files = self.node.certs
        if files is None:
            return None
        try:
            return files.info().renew_at
        except (OSError, ValueError):
            return None

    def _maybe_renew(self) -> None:
        """Ask for a new certificate once two thirds of this one's life have passed."""
        files = self.node.certs
        due = self._renew_at is not None and self.node.clock() >= self._renew_at
        if files is None or not due or self._renewing:
            return
        if time.monotonic() < self.node.renew_not_before:
            return
        self.node.renew_not_before = time.monotonic() + RENEW_GAP
        self._renewing = True
        self.node.log("certificate two thirds through its life: asking the master for a new one")
        task = asyncio.create_task(self._ask_renewal(files))
        self._requests.add(task)  # cancelled with the session
        task.add_done_callback(self._requests.discard)

    async def _ask_renewal(self, files: tls.NodeFiles) -> None:
        """A new key and CSR (made in a child: `daemon.keygen`), sent as a `Renew`."""
        try:
            csr = await keygen.make(files, self.node.name)
        except (OSError, TimeoutError, tls.TlsError) as e:
            self._renewing = False
            self.node.log(f"cannot renew the certificate: {e}")
            return
        with contextlib.suppress(ConnectionClosed):  # the next session tries again
            self.conn.send_nowait(m.Renew(id=RENEW_ID, csr=csr))

    def _renewed(self, msg: m.Renewed | m.Error) -> None:
        self._renewing = False
        files = self.node.certs
        if isinstance(msg, m.Error) or files is None:
            why = msg.message if isinstance(msg, m.Error) else "no certificate files"
            self.node.log(f"certificate not renewed: {why}")
            return
        try:
            info = files.store(msg.cert)
        except (OSError, ValueError) as e:
            self.node.log(f"certificate not renewed: cannot store it: {e}")
            return
        self._renew_at = info.renew_at
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.not_after))
        self.node.log(f"certificate renewed: valid until {until} UTC")

    def _proc_changed(self, info: m.ProcInfo) -> None:
        # Best effort: if the connection is gone, the next Register carries it.
        with contextlib.suppress(ConnectionClosed):
            self.conn.send_nowait(m.ProcEvent(proc=info))
