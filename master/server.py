"""The worker listener: one task per connected worker, plus the liveness clock.

Each connection runs the handshake, takes the worker's full state, then
routes what arrives: replies to their waiters, heartbeats and events into
the `Cluster`.  A bad frame or a failed handshake closes that one
connection with a logged reason; the master keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from master.model import Cluster
from transport import handshake
from transport.auth import AuthError
from transport.codec import FrameError
from transport.connection import Calls, Connection, ConnectionClosed
from transport.messages import (
    Goodbye,
    Heartbeat,
    LogChunk,
    Message,
    ProcEvent,
    Register,
)

log = logging.getLogger("corral.master")

REGISTER_TIMEOUT = 10.0


class WorkerLink:
    """The live connection to one registered worker."""

    def __init__(self, name: str, conn: Connection) -> None:
        self.name = name
        self.conn = conn
        self.calls = Calls()
        # Follow streams: request id -> queue of LogChunk (None = stream closed).
        self.streams: dict[int, asyncio.Queue[LogChunk | None]] = {}
        self.closed = False

    async def call(self, make: Callable[[int], Message], timeout: float = 10.0) -> Message:
        result: Message = await self.calls.call(self.conn, make, timeout)
        return result

    def close_streams(self) -> None:
        for q in self.streams.values():
            q.put_nowait(None)
        self.streams.clear()


class WorkerServer:
    """Accepts workers on a TCP port and keeps node liveness up to date."""

    def __init__(self, cluster: Cluster, token: str, heartbeat: float) -> None:
        self.cluster = cluster
        self.token = token
        self.heartbeat = heartbeat
        self.links: dict[str, WorkerLink] = {}
        self._server: asyncio.Server | None = None
        self._clock: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""

    async def start(self, host: str, port: int) -> str:
        self._server = await asyncio.start_server(self._accept, host, port, limit=2**20)
        sock = self._server.sockets[0].getsockname()
        self.address = f"{sock[0]}:{sock[1]}"
        self._clock = asyncio.create_task(self._liveness())
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._clock is not None:
            self._clock.cancel()
        for link in list(self.links.values()):
            link.calls.fail_all("master shutting down")
            link.close_streams()
            with contextlib.suppress(Exception):
                await link.conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._clock is not None:
            await asyncio.gather(self._clock, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # --- admission ------------------------------------------------------
    def _admit(self, name: str) -> str | None:
        if not name or len(name) > 64 or any(c.isspace() or c == ":" for c in name):
            return f"invalid worker name {name!r}"
        if name in self.links and self.cluster.node_state(name) != "lost":
            return f"a worker named {name!r} is already connected"
        return None  # a lost node's name may be taken over (its link is half-open)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(reader, writer)
        try:
            await self._serve(conn)
        except (AuthError, FrameError) as e:
            log.warning("worker connection from %s closed: %s", conn.peer, e)
            self.cluster.note("node.refused", "", f"connection from {conn.peer} refused: {e}")
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a peer must never take the master down
            log.exception("worker connection from %s failed", conn.peer)
        finally:
            self._tasks.discard(task)
            await conn.close()

    async def _serve(self, conn: Connection) -> None:
        name = await handshake.accept(conn, self.token, self.heartbeat, self._admit)
        msg = await asyncio.wait_for(conn.recv(), REGISTER_TIMEOUT)
        if not isinstance(msg, Register):
            raise FrameError(f"expected Register, got {type(msg).__name__}")
        if msg.facts.name != name:
            raise FrameError(f"registered as {msg.facts.name!r} after saying hello as {name!r}")
        reason = self._admit(name)  # again: another connection may have won meanwhile
        if reason:
            raise AuthError(reason)
        stale = self.links.get(name)
        if stale is not None:
            log.warning("node %s: replacing its lost connection from %s", name, stale.conn.peer)
            stale.conn.writer.close()  # its pump ends; this link is already in its place
        link = WorkerLink(name, conn)
        self.links[name] = link
        try:
            self.cluster.register(msg.facts, conn.peer, msg.procs)
            await self._pump(link)
        finally:
            if self.links.get(name) is link:
                del self.links[name]
            link.calls.fail_all(f"node {name} disconnected")
            link.close_streams()

    async def _pump(self, link: WorkerLink) -> None:
        """Route every frame from one worker until it goes away."""
        while True:
            msg = await link.conn.recv()
            if self.links.get(link.name) is not link:
                return  # replaced by a newer connection: its frames speak for the node
            if isinstance(msg, Heartbeat):
                self.cluster.beat(link.name, msg.metrics, msg.procs)
            elif isinstance(msg, ProcEvent):
                self.cluster.update_proc(link.name, msg.proc)
            elif isinstance(msg, LogChunk) and msg.id in link.streams:
                link.streams[msg.id].put_nowait(msg)
                if msg.eof:
                    link.streams.pop(msg.id, None)
            elif isinstance(msg, Goodbye):
                why = f"{link.name} left" + (f": {msg.reason}" if msg.reason else "")
                self.cluster.set_node_state(link.name, "left", why)
                return
            elif not link.calls.resolve(msg):
                log.debug("ignoring unexpected %s from %s", type(msg).__name__, link.name)

    # --- liveness -------------------------------------------------------
    async def _liveness(self) -> None:
        """Mark nodes suspect after one missed beat and lost after two.

        Ticks at H/10, so a lost node is reported no later than 2H + 10%.
        """
        h = self.heartbeat
        while True:
            await asyncio.sleep(h / 10)
            now = time.monotonic()
            for name in self.cluster.node_names():
                state = self.cluster.node_state(name)
                if state not in ("alive", "suspect"):
                    continue
                age = now - self.cluster.last_beat_mono(name)
                if age >= 2 * h:
                    self.cluster.set_node_state(
                        name, "lost", f"{name} lost: no heartbeat for {age:.1f}s"
                    )
                elif age >= 1.5 * h and state == "alive":
                    self.cluster.set_node_state(
                        name, "suspect", f"{name} suspect: no heartbeat for {age:.1f}s"
                    )
