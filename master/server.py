"""The worker listener: one task per connected worker, plus the liveness clock.

Each connection runs the handshake, takes the worker's full state, then
routes what arrives: replies to their waiters, heartbeats and events into
the `Cluster`.  A bad frame or a failed handshake closes that one
connection with a logged reason; the master keeps serving everyone else.

Every connection is TLS 1.3 (`transport.tls`).  One that presents a client
certificate from the CA runs the channel, under the name in its
certificate, unless that certificate is revoked or no longer on record.
One without a certificate that asked (by ALPN) to enroll may only do that:
prove the token, get a certificate for its CSR, and be closed.  Any other
is closed before a frame is read: it never reaches the frame loop.

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
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from corral.master.ca import CA
from corral.master.events import RateLimiter
from corral.master.model import Cluster
from corral.transport import beats, handshake, tls
from corral.transport.auth import AuthError, Redirect
from corral.transport.codec import FrameError
from corral.transport.connection import DEADLINE_GRACE, Calls, Connection, ConnectionClosed
from corral.transport.limits import FdBudget, GuardedServer, raise_nofile_limit, start_server
from corral.transport.messages import (
    Error,
    Goodbye,
    Heartbeat,
    LogChunk,
    Pong,
    ProcEvent,
    Refused,
    Register,
    Renew,
    Renewed,
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


def _tls_why(e: BaseException) -> str:
    """A TLS failure in a few words: OpenSSL's reason ("WRONG_VERSION_NUMBER"), else the text."""
    if isinstance(e, TimeoutError):
        return "timed out"
    reason = getattr(e, "reason", None)
    if reason:
        return str(reason)
    if not str(e) and isinstance(e, (ConnectionError, EOFError)):
        return "the peer closed the connection"  # one that gave up waiting, say
    return str(e) or type(e).__name__


class WorkerServer:
    """Accepts workers on a TCP port and keeps node liveness up to date."""

    def __init__(self, cluster: Cluster, token: str, heartbeat: float, ca: CA) -> None:
        self.cluster = cluster
        self.token = token
        self.ca = ca
        self.wrong_tokens = 0  # enrollments refused for a wrong token, since start
        self.heartbeat = heartbeat
        self.links: dict[str, WorkerLink] = {}
        self._server: GuardedServer | None = None
        self._context: ssl.SSLContext | None = None  # the channel's TLS, server side
        self._refusals = RateLimiter()
        self._clock: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unauthenticated: Counter[str] = Counter()  # source host -> handshakes under way
        self.address = ""
        # Masters on etcd: the term stamped on every command, and why this
        # master takes no workers now, with the leader's address ("", "": it leads).
        self.term = 0
        self.standby: Callable[[], tuple[str, str]] | None = None

    async def start(self, host: str, port: int) -> str:
        raise_nofile_limit()
        self._context = self.ca.channel_context()
        # A flood of connections here stops FD_RESERVE short of the limit: the
        # API (which keeps a smaller reserve) and the links we have still work.
        self._server = await start_server(
            self._accept,
            host,
            port,
            budget=FdBudget(reserve=FD_RESERVE),
            limit=READ_LIMIT,
            ssl=self._context,
            ssl_handshake_timeout=tls.TLS_HANDSHAKE_TIMEOUT,
            gate=self,
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

    # --- the gate: before the TLS handshake -------------------------------
    def enter(self, peer: str) -> bool:
        """A connection from ``peer`` may start its TLS handshake: it counts as unauthenticated."""
        host = peer.rpartition(":")[0]
        crowded = self._crowded(host)
        if crowded:
            # Full everywhere: one line for everyone (a storm from 2,000 nodes
            # would otherwise log a line for each of them).
            everyone = self._unauthenticated.total() >= MAX_UNAUTHENTICATED
            self._refused(peer, crowded, "*" if everyone else None)
            return False
        self._unauthenticated[host] += 1
        return True

    def _authenticated(self, host: str) -> None:
        self._unauthenticated[host] -= 1
        if self._unauthenticated[host] <= 0:
            del self._unauthenticated[host]

    def failed(self, peer: str, error: BaseException) -> None:
        """Its TLS handshake failed: plaintext, no certificate of our CA, or too slow."""
        self._authenticated(peer.rpartition(":")[0])
        self._refused(peer, f"TLS handshake failed: {_tls_why(error)}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection whose TLS handshake is done (`enter` counted it)."""
        task = asyncio.current_task()
        assert task is not None
        conn = Connection(reader, writer)
        host = conn.peer.rpartition(":")[0]
        self._tasks.add(task)
        counted = [True]  # still among the unauthenticated

        def authenticated() -> None:
            if counted[0]:
                counted[0] = False
                self._authenticated(host)

        try:
            await self._serve(conn, authenticated)
        except Redirect as e:  # a standby's everyday answer, not a refusal worth a line
            log.debug("worker %s sent to the leader %s: %s", conn.peer, e.leader, e)
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

    def _refused(self, peer: str, why: str, source: str | None = None) -> None:
        """One short line per refusal, at most one per address (or ``source``) and kind in 10 s."""
        kind = "".join(c for c in why if not c.isdigit())[:40]  # "frame length N exceeds..."
        key = f"{source or peer.rpartition(':')[0]} {kind}"
        who = peer or "a peer gone before its address was read"
        line = self._refusals.admit(key, f"{who} refused: {why[:160]}")
        if line is not None:
            log.warning("worker connection from %s", line)
            self.cluster.note("node.refused", "", f"connection from {line}")

    def revoke(self, name: str) -> int:
        """Refuse ``name``'s certificates from now on and cut it off; how many it had."""
        count = self.ca.revoke(name)
        link = self.links.pop(name, None)
        if link is not None:
            link.drop(f"the certificate of {name} was revoked")
        if self.cluster.has_node(name) and self.cluster.node_state(name) in ("alive", "suspect"):
            self.cluster.set_node_state(name, "lost", f"{name} is lost (certificate revoked)")
        self.cluster.note("node.revoked", name, f"{name}: certificates revoked ({count})")
        return count

    def set_term(self, term: int) -> None:
        """A new term: stamped from now on on every command, on every link."""
        self.term = term
        for link in self.links.values():
            link.calls.term = term

    def send_away(self, reason: str) -> None:
        """Another master leads: say goodbye to every worker, which then goes to it."""
        for name, link in list(self.links.items()):
            with contextlib.suppress(Exception):
                link.conn.send_nowait(Goodbye(reason=reason))
            del self.links[name]
            link.drop(reason)
            if self.cluster.node_state(name) in ("alive", "suspect"):
                self.cluster.set_node_state(name, "lost", f"{name} went to the leader ({reason})")

    def _sign(self, name: str, csr: bytes) -> tuple[bytes, bytes]:
        return self.ca.sign_node(name, csr), self.ca.cert_der

    async def _enroll(self, conn: Connection) -> None:
        """A connection without a certificate: enrollment, and nothing else."""
        try:
            name = await handshake.accept_enroll(conn, self.token, self._sign, self._admit)
        except AuthError as e:
            if "wrong cluster token" not in str(e):
                raise
            self.wrong_tokens += 1
            raise AuthError(f"{e} ({self.wrong_tokens} since start)") from None
        self.cluster.note("node.enrolled", name, f"{name} enrolled from {conn.peer}")

    async def _serve(self, conn: Connection, authenticated: Callable[[], None]) -> None:
        began = time.monotonic()
        ssl_object = conn.writer.get_extra_info("ssl_object")
        peer = tls.peer_of(ssl_object)
        if peer is None:  # checked before any frame is read
            if ssl_object is None or ssl_object.selected_alpn_protocol() != tls.ALPN_ENROLL:
                raise AuthError("TLS without a client certificate")
            await self._enroll(conn)
            return
        refused = self.ca.allowed(peer.name, peer.serial)
        if refused and self.standby is not None:
            # Masters on etcd share the CA: the node may have enrolled with another.
            self.ca.open()
            refused = self.ca.allowed(peer.name, peer.serial)
        if refused:  # said, so the worker can log why; nothing of its is read
            with contextlib.suppress(ConnectionClosed):
                conn.send_nowait(Refused(reason=refused))
            raise AuthError(refused)
        # Its certificate, from our CA, on record and not revoked, says who it
        # is: its place among the unauthenticated goes to the next in line now,
        # not a round trip later (in a reconnect storm that place is the queue).
        authenticated()
        history = (self.cluster.keep_ended, self.cluster.keep_ended_for)
        name = await handshake.accept_channel(
            conn,
            peer.name,
            self.heartbeat,
            self._admit,
            history=history,
            term=self.term,
            standby=self.standby,
            beat_window=beats.window(self.heartbeat, len(self.links) + 1),
        )
        # The handshake took at least a round trip: the worker's reading of our
        # clock is off by less than that, so a deadline gets that much grace.
        grace = DEADLINE_GRACE + (time.monotonic() - began)
        msg = await asyncio.wait_for(conn.recv(), REGISTER_TIMEOUT)
        if not isinstance(msg, Register):
            raise FrameError(f"expected Register, got {type(msg).__name__}")
        if msg.facts.name != name:
            raise FrameError(f"registered as {msg.facts.name!r} after saying hello as {name!r}")
        reason = self._admit(name)  # again: another connection may have won meanwhile
        reason = reason or self.ca.allowed(peer.name, peer.serial)  # or a revoke come
        if reason:
            raise AuthError(reason)
        stale = self.links.get(name)
        if stale is not None:
            log.warning("node %s: replacing its stale connection from %s", name, stale.conn.peer)
            stale.drop(f"node {name} reconnected")
        link = WorkerLink(name, conn, lambda: self._window(name), grace)
        link.calls.term = self.term
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
                        link.conn.send_nowait(
                            Unfollow(id=link.calls.next_id(), stream=msg.id, term=self.term)
                        )
            elif isinstance(msg, Renew):
                link.conn.send_nowait(self._renew(link.name, msg))
            elif isinstance(msg, Goodbye):
                why = f"{link.name} left" + (f": {msg.reason}" if msg.reason else "")
                self.cluster.set_node_state(link.name, "left", why)
                return
            elif not link.calls.resolve(msg):
                log.debug("ignoring unexpected %s from %s", type(msg).__name__, link.name)

    def _refresh_certificate(self) -> None:
        """The serving certificate renewed, two thirds into its life (a long-running master)."""
        try:
            if self.ca.refresh_server_cert():
                self.cluster.note("master.renewed", "", "the master's certificate was renewed")
        except (OSError, ValueError) as e:
            log.warning("cannot renew the master's certificate: %s", e)

    def _renew(self, name: str, msg: Renew) -> Renewed | Error:
        """A new certificate for ``name`` (the one its current certificate names)."""
        try:
            cert = self.ca.sign_node(name, msg.csr)
        except ValueError as e:
            return Error(id=msg.id, message=f"renewal refused: {e}")
        self.cluster.note("node.renewed", name, f"{name}: certificate renewed")
        return Renewed(id=msg.id, cert=cert)

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
                self._refresh_certificate()
            for name, state, last in self.cluster.silent_nodes(now - 1.5 * h):
                age = now - last
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
