"""Open-file limits for servers that accept connections from anyone.

A server that accepts until ``accept()`` fails with EMFILE has no file
descriptor left for anything else: not for the next legitimate client, not
for the event log, not for another listener in the same process.  So a
server raises its soft ``RLIMIT_NOFILE`` to the hard limit once at start
(`raise_nofile_limit`) and, for every connection it accepts, asks an
`FdBudget` whether that connection may stay; one that would eat into the
reserve is closed at once.

The asking must happen in the accept loop itself, which `start_server`
(a stand-in for `asyncio.start_server`) does.  A check in an
`asyncio.start_server` callback comes too late: asyncio accepts a
backlog's worth of connections, over several turns of the loop, before the
first callback runs, and a flood spends the reserve in between.

Give each listener its own budget.  A listener strangers reach (the worker
port) should keep a larger reserve than the one operators need to reach
(the HTTP API), so that a flood of the first leaves room for the second.

Stdlib only; Linux counts open descriptors in ``/proc/self/fd``.  Where that
does not exist the headroom is unknown and every connection is allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from corral.transport.streams import stream_pair

if TYPE_CHECKING:
    from ssl import SSLContext

log = logging.getLogger("corral.limits")

DEFAULT_RESERVE = 64  # descriptors a listener leaves free for everything else
_FD_DIR = "/proc/self/fd"
_UNKNOWN = 1 << 30  # headroom where descriptors cannot be counted


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the soft limit now in force.

    Idempotent and never fails: when the limit cannot be raised the
    current soft limit is returned.  Children inherit the raised limit; a
    process that starts other people's programs may want to restore the
    old soft limit in them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:  # Linux caps it at fs.nr_open anyway
        target = _nr_open()
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def nofile_limit() -> int:
    """The soft open-files limit (a huge number if unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _UNKNOWN if soft == resource.RLIM_INFINITY else soft


def open_fd_count() -> int | None:
    """How many descriptors this process has open; None where that cannot be counted.

    Costs a directory listing: about 0.5 ms with 1,000 descriptors open,
    and proportionally more with more.  `FdBudget` calls it sparingly.
    """
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return None
    return len(names) - 1  # the listing itself held one open


def fd_headroom() -> int:
    """Descriptors that can still be opened before the soft limit (exact, not cheap)."""
    count = open_fd_count()
    if count is None:
        return _UNKNOWN
    return nofile_limit() - count


class FdBudget:
    """Decides, cheaply, whether one more accepted connection may stay open.

    Call `allow` once for each connection just accepted (its descriptor is
    already open): True keeps it, False means close it at once because
    fewer than ``reserve`` descriptors would be left free.

    Counting open descriptors is exact but costs a directory listing, so
    the budget counts now and then and, between counts, takes one
    descriptor off its estimate for every connection it allows (closed
    connections are noticed at the next count: the estimate errs towards
    refusing).  It counts again when the estimate comes within twice the
    reserve of the floor or is older than ``recount_after`` seconds, but
    never more often than 50 times the last count's own cost, so counting
    stays under 2% of a core however many descriptors are open.
    """

    def __init__(
        self,
        reserve: int = DEFAULT_RESERVE,
        recount_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        headroom: Callable[[], int] = fd_headroom,
    ) -> None:
        self.reserve = reserve
        self.recount_after = recount_after
        self._clock = clock
        self._headroom = headroom
        self._free = 0  # descriptors free at the last count, less those allowed since
        self._counted_at = float("-inf")
        self._min_gap = 0.0  # seconds between counts, from what the last one cost

    def allow(self) -> bool:
        """True if the connection just accepted may stay (the reserve stays free)."""
        now = self._clock()
        stale = now - self._counted_at > self.recount_after
        low = self._free < 2 * self.reserve
        if (stale or low) and now - self._counted_at >= self._min_gap:
            self._count(now)
        if self._free < self.reserve:
            return False
        self._free -= 1  # the next connection will hold one more
        return True

    def _count(self, now: float) -> None:
        self._free = self._headroom()
        took = self._clock() - now
        self._counted_at = now
        self._min_gap = 50 * took


class Gate(Protocol):
    """Asked about each connection before its TLS handshake (see `start_server`)."""

    def enter(self, peer: str) -> bool:
        """May ``peer`` (``HOST:PORT``) start its TLS handshake?  False: it is closed now."""
        ...

    def failed(self, peer: str, error: BaseException) -> None:
        """Its TLS handshake failed (or timed out): the callback will not run for it."""
        ...


class GuardedServer:
    """Listening sockets whose accept loop asks an `FdBudget` about each connection.

    What `asyncio.start_server` gives, with one difference that matters
    under a flood: asyncio accepts up to a backlog of connections (and
    again on the next turns of the loop) before any callback can look at
    them, so a check in the callback comes too late to keep the last
    descriptors free.  Here each connection is accepted, weighed and, if it
    would eat into the reserve, sent ``refusal`` and closed on the spot,
    before the next accept: the process never holds more than one
    descriptor beyond its budget.  Should ``accept`` itself fail for want
    of descriptors, accepting pauses for `PAUSE` seconds.  Make one with
    `start_server`.
    """

    PAUSE = 0.1

    def __init__(
        self,
        client_connected_cb: Callable[
            [asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]
        ],
        budget: FdBudget,
        limit: int,
        refusal: bytes,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._cb = client_connected_cb
        self._gate = gate
        self._ssl = ssl
        self._ssl_timeout = ssl_handshake_timeout
        self.budget = budget
        self.refusal = refusal
        self.refused = 0  # connections turned away for want of descriptors
        self.sockets: list[socket.socket] = []
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused: asyncio.TimerHandle | None = None
        self._starved = False
        self._closed = False

    def _listen(self, sock: socket.socket) -> None:
        self.sockets.append(sock)
        self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(64):  # then let the loop breathe
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS: wait for descriptors to free up
                if not self._starved:  # once per spell, not ten times a second
                    log.warning("cannot accept on %s: %s; pausing", sock.getsockname(), e)
                self._starved = True
                self._pause()
                return
            self._starved = False
            if not self.budget.allow():
                self._turn_away(conn)
                continue
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _turn_away(self, conn: socket.socket) -> None:
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            if self.refusal:
                conn.send(self.refusal)
        conn.close()

    def _pause(self) -> None:
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(self.PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    async def _serve(self, conn: socket.socket) -> None:
        peer = ""
        if self._gate is not None:
            with contextlib.suppress(OSError, IndexError):
                address = conn.getpeername()
                peer = f"{address[0]}:{address[1]}"
            if not self._gate.enter(peer):
                conn.close()
                return
        reader, protocol, buffered = stream_pair(self._limit)
        try:
            transport, _ = await self._loop.connect_accepted_socket(
                lambda: buffered, conn, ssl=self._ssl, ssl_handshake_timeout=self._ssl_timeout
            )
        except (OSError, TimeoutError) as e:  # TLS handshakes fail or time out too
            conn.close()
            if self._gate is not None:
                self._gate.failed(peer, e)
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
        try:
            await self._cb(reader, writer)
        except Exception:  # as asyncio's own servers do: log it, lose only this connection
            log.exception("unhandled error serving a connection")
            transport.close()

    def close(self) -> None:
        """Stop listening (again is harmless); connections already accepted carry on."""
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()

    async def wait_closed(self) -> None:
        """Wait until every accepted connection's callback has returned."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def start_server(
    client_connected_cb: Callable[
        [asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]
    ],
    host: str,
    port: int,
    *,
    budget: FdBudget | None = None,
    limit: int = 2**16,
    backlog: int = 100,
    refusal: bytes = b"",
    ssl: SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
    gate: Gate | None = None,
) -> GuardedServer:
    """Like `asyncio.start_server`, but no connection may eat into ``budget``'s reserve.

    ``refusal`` is sent (best effort) to a connection turned away for want
    of descriptors, before it is closed.  Binds every address ``host``
    resolves to, as asyncio does.  ``ssl`` wraps each kept connection in TLS
    (the handshake runs after the budget said yes, and after ``gate``, if
    given, let it in: a peer still in its TLS handshake already counts
    against whatever the gate limits).  Call `raise_nofile_limit` first.
    """
    server = GuardedServer(
        client_connected_cb, budget or FdBudget(), limit, refusal, ssl, ssl_handshake_timeout, gate
    )
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            server._listen(sock)
    except OSError:
        server.close()
        raise
    return server
