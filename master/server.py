"""The worker listener: one task per connected worker, plus the liveness clock.

Each connection runs the handshake, takes the worker's full state, then
routes what arrives: replies to their waiters, heartbeats and events into
the `Cluster`.  A bad frame or a failed handshake closes that one
connection with a logged reason; the master keeps serving everyone else.

A peer that has not authenticated gets little: frames of a few KiB, a few
seconds, and a place among at most `MAX_UNAUTHENTICATED` such connections
(`MAX_UNAUTHENTICATED_PER_HOST` from one address).  Every heartbeat is
answered with a `Pong`.  A node that misses two beats is lost: its
connection is dropped, with whatever was still queued for it, and every
call waiting on it fails once its deadline has passed.  A connection that
closes makes its node lost at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from corral.master.events import RateLimiter
from corral.master.model import Cluster
from corral.transport import handshake
from corral.transport.auth import AuthError
from corral.transport.codec import FrameError
from corral.transport.connection import DEADLINE_GRACE, Calls, Connection, ConnectionClosed
from corral.transport.limits import FdBudget, GuardedServer, raise_nofile_limit, start_server
from corral.transport.messages import (
    Goodbye,
    Heartbeat,
    LogChunk,
    Pong,
    ProcEvent,
    Register,
    Request,
    Unfollow,
)

R = TypeVar("R")

log = logging.getLogger("corral.master")

REGISTER_TIMEOUT = 10.0
FD_RESERVE = 64  # descriptors kept free under a flood of worker-port connections
MAX_UNAUTHENTICATED = 64
MAX_UNAUTHENTICATED_PER_HOST = 8
READ_LIMIT = 64 * 1024  # stream buffer: what a peer can park in the master per connection
EXPIRE_EVERY = 60.0  # seconds between sweeps for ended processes past the history's age
FOLLOW_BUDGET = 1024 * 1024  # log bytes queued for one follower before its stream is paused


class Follow:
    """One log follow stream on a worker link: chunks queued up to a byte budget.

    A follower that stops reading (``corral logs -f X | less``) must not make
    the master buffer the whole log.  Past `FOLLOW_BUDGET` the stream is
    *paused*: the worker is told to stop it, and the follower, once it has
    caught up, asks again from its offset, missing nothing.
    """

    def __init__(self, budget: int = FOLLOW_BUDGET) -> None:
        self.queue: asyncio.Queue[LogChunk | None] = asyncio.Queue()
        self.queued = 0
        self.budget = budget
        self.paused = False

    def feed(self, chunk: LogChunk) -> bool:
        """Queue ``chunk``; False when the stream must stop (paused, or at its end)."""
        self.queue.put_nowait(chunk)
        self.queued += len(chunk.data)
        if self.queued > self.budget and not chunk.eof:
            self.paused = True
        return not (self.paused or chunk.eof)

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def get(self) -> LogChunk | None:
        chunk = await self.queue.get()
        if chunk is not None:
            self.queued -= len(chunk.data)
        return chunk


class WorkerLink:
    """The live connection to one registered worker.

    ``window()`` says how long a request may take to reach the worker:
    two beats while its node is alive, one while it is suspect.
    """

    def __init__(
        self, name: str, conn: Connection, window: Callable[[], float], grace: float
    ) -> None:
        self.name = name
        self.conn = conn
        self.calls = Calls(grace)
        self.window = window
        self.streams: dict[int, Follow] = {}  # by the id of the Logs request that opened it
        self.closed = False

    async def call(
        self, make: Callable[[int], Request], expect: type[R], timeout: float = 10.0
    ) -> R:
        """Send ``make(id)``; its reply, which must be an ``expect`` (else `CallError`)."""
        return await self.calls.call(self.conn, make, expect, timeout, self.window())

    def drop(self, reason: str) -> None:
        """Stop talking to this worker: abort the connection, fail its calls and streams."""
        self.closed = True
        self.conn.abort()
        self.calls.fail_all(reason)
        self.close_streams()

    def close_streams(self) -> None:
        for stream in self.streams.values():
            stream.close()
        self.streams.clear()


class WorkerServer:
    """Accepts workers on a TCP port and keeps node liveness up to date."""

    def __init__(self, cluster: Cluster, token: str, heartbeat: float) -> None:
        self.cluster = cluster
        self.token = token
        self.heartbeat = heartbeat
        self.links: dict[str, WorkerLink] = {}
        self._server: GuardedServer | None = None
        self._refusals = RateLimiter()
        self._clock: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unauthenticated: Counter[str] = Counter()  # source host -> handshakes under way
        self.address = ""

    async def start(self, host: str, port: int) -> str:
        raise_nofile_limit()
        # A flood of connections here stops FD_RESERVE short of the limit: the
        # API (which keeps a smaller reserve) and the links we have still work.
        self._server = await start_server(
            self._accept, host, port, budget=FdBudget(reserve=FD_RESERVE), limit=READ_LIMIT
        )
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
        if (
            not name
            or len(name) > 64
            or name in (".", "..")
            or any(c.isspace() or c in ":/" or not c.isprintable() for c in name)
        ):
            return f"invalid worker name {name!r}"
        if name in self.links and self.cluster.node_state(name) == "alive":
            return f"a worker named {name!r} is already connected"
        return None  # a suspect or lost node's name may be taken over (its link is stale)

    def _window(self, name: str) -> float:
        """How long a request to ``name`` may take to arrive: 2H alive, H suspect."""
        suspect = self.cluster.node_state(name) == "suspect"
        return self.heartbeat if suspect else 2 * self.heartbeat

    def _crowded(self, host: str) -> str:
        """Why a new unauthenticated connection from ``host`` is turned away, or ""."""
        if self._unauthenticated.total() >= MAX_UNAUTHENTICATED:
            return f"{MAX_UNAUTHENTICATED} handshakes already under way"
        if self._unauthenticated[host] >= MAX_UNAUTHENTICATED_PER_HOST:
            return f"{MAX_UNAUTHENTICATED_PER_HOST} handshakes from {host} already under way"
        return ""

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = Connection(reader, writer)
        host = conn.peer.rpartition(":")[0]
        crowded = self._crowded(host)
        if crowded:
            conn.abort()
            self._refused(conn.peer, crowded)
            return
        self._tasks.add(task)
        self._unauthenticated[host] += 1
        counted = [True]  # still among the unauthenticated

        def authenticated() -> None:
            if counted[0]:
                counted[0] = False
                self._unauthenticated[host] -= 1
                if self._unauthenticated[host] <= 0:
                    del self._unauthenticated[host]

        try:
            await self._serve(conn, authenticated)
        except (AuthError, FrameError) as e:
            self._refused(conn.peer, str(e))
        except (ConnectionClosed, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a peer must never take the master down
            log.exception("worker connection from %s failed", conn.peer)
        finally:
            authenticated()
            self._tasks.discard(task)
            await conn.close()

    def _refused(self, peer: str, why: str) -> None:
        """One short line per refusal, at most one per address and kind every 10 s."""
        kind = "".join(c for c in why if not c.isdigit())[:40]  # "frame length N exceeds..."
        key = f"{peer.rpartition(':')[0]} {kind}"
        line = self._refusals.admit(key, f"{peer} refused: {why[:160]}")
        if line is not None:
            log.warning("worker connection from %s", line)
            self.cluster.note("node.refused", "", f"connection from {line}")

    async def _serve(self, conn: Connection, authenticated: Callable[[], None]) -> None:
        began = time.monotonic()
        history = (self.cluster.keep_ended, self.cluster.keep_ended_for)
        name = await handshake.accept(
            conn, self.token, self.heartbeat, self._admit, history=history
        )
        authenticated()
        # The handshake took at least a round trip: the worker's reading of our
        # clock is off by less than that, so a deadline gets that much grace.
        grace = DEADLINE_GRACE + (time.monotonic() - began)
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
            log.warning("node %s: replacing its stale connection from %s", name, stale.conn.peer)
            stale.drop(f"node {name} reconnected")
        link = WorkerLink(name, conn, lambda: self._window(name), grace)
        self.links[name] = link
        why = "closed by the worker"
        try:
            self.cluster.register(msg.facts, conn.peer, msg.procs)
            await self._pump(link)
        except ConnectionClosed as e:
            why = f"ended: {e}"
            raise
        except FrameError as e:
            why = f"bad frame: {e}"
            raise
        finally:
            if self.links.get(name) is link:
                del self.links[name]
                # Not alive for the seconds until beats are missed: lost now.
                self.cluster.set_node_state(name, "lost", f"{name} is lost (connection {why})")
            link.drop(f"node {name} disconnected")

    async def _pump(self, link: WorkerLink) -> None:
        """Route every frame from one worker until it goes away."""
        while True:
            msg = await link.conn.recv()
            if self.links.get(link.name) is not link:
                return  # replaced by a newer connection: its frames speak for the node
            if isinstance(msg, Heartbeat):
                link.conn.send_nowait(Pong(seq=msg.seq))
                self.cluster.beat(link.name, msg.metrics, msg.procs)
            elif isinstance(msg, ProcEvent):
                self.cluster.update_proc(link.name, msg.proc)
            elif isinstance(msg, LogChunk) and msg.id in link.streams:
                if not link.streams[msg.id].feed(msg):
                    del link.streams[msg.id]
                    if not msg.eof:  # paused: the follower resumes from its offset
                        link.conn.send_nowait(Unfollow(id=link.calls.next_id(), stream=msg.id))
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
        expired = time.monotonic()
        while True:
            await asyncio.sleep(h / 10)
            now = time.monotonic()
            if now - expired >= EXPIRE_EVERY:
                expired = now
                self.cluster.expire()
            for name in self.cluster.node_names():
                state = self.cluster.node_state(name)
                if state not in ("alive", "suspect"):
                    continue
                age = now - self.cluster.last_beat_mono(name)
                if age >= 2 * h:
                    why = f"{name} is lost (no heartbeat for {age:.1f} s)"
                    self.cluster.set_node_state(name, "lost", why)
                    link = self.links.pop(name, None)
                    if link is not None:  # stop writing to it: nothing queued goes out late
                        link.drop(why)
                elif age >= 1.5 * h and state == "alive":
                    self.cluster.set_node_state(
                        name, "suspect", f"{name} suspect: no heartbeat for {age:.1f}s"
                    )
