"""The connection object: moves whole frames over an asyncio stream.

It knows framing, not meaning: what arrives is fed to the codec's
`FrameDecoder` (the same push decoder the fuzz tests drive), what leaves is
`encode`d.  `Calls` pairs requests with the replies that echo their ids, typed
by the reply each request expects.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from corral.transport.codec import FrameDecoder, FrameError, encode
from corral.transport.messages import MAX_FRAME, REPLIES, Error, Message, Request

R = TypeVar("R")
READ_CHUNK = 256 * 1024  # bytes asked of the stream at a time

# Added to a request's deadline before the master calls it failed: covers the
# error in the worker's reading of the master's clock (at most the one-way
# latency of the Welcome it learned it from) and the reply's trip back.
DEADLINE_GRACE = 0.25


CLOSE_WAIT = 1.0  # seconds a close may take before the connection is dropped


class ConnectionClosed(Exception):
    """The peer went away (EOF or reset)."""


class Connection:
    """A framed message stream over an asyncio reader/writer pair."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int = MAX_FRAME
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder(limit)
        self._ready: deque[Message] = deque()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    @property
    def limit(self) -> int:
        """The largest frame body accepted now (small until the handshake is done)."""
        return self._decoder.limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._decoder.limit = value

    async def recv(self) -> Message:
        """The next message; `ConnectionClosed` at EOF, `FrameError` on a bad frame."""
        while not self._ready:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, OSError) as e:
                raise ConnectionClosed(str(e)) from None
            if not data:
                if self._decoder.pending:
                    raise FrameError(f"truncated frame: {self._decoder.pending} bytes then EOF")
                raise ConnectionClosed("peer closed the connection")
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()

    def abort(self) -> None:
        """Drop the connection now, discarding whatever is still queued to send."""
        self.writer.transport.abort()

    def send_nowait(self, msg: Message | Request) -> None:
        """Queue ``msg`` without waiting for the socket buffer to drain."""
        if self.writer.is_closing():
            raise ConnectionClosed("connection is closing")
        self.writer.write(encode(msg))

    async def send(self, msg: Message | Request) -> None:
        self.send_nowait(msg)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise ConnectionClosed(str(e)) from None

    async def close(self) -> None:
        """Close, waiting at most `CLOSE_WAIT` for it (a TLS peer may never answer
        our close_notify); then the connection is dropped."""
        if not self.writer.is_closing():
            self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self.writer.wait_closed()
        except TimeoutError:
            self.writer.transport.abort()
        except (ConnectionError, OSError):
            pass


class CallError(Exception):
    """A request failed: the worker replied with an error, timed out or went away."""


class CallRefused(CallError):
    """The worker answered the request with an `Error`: it was refused, not lost."""


class Calls:
    """Pending requests on one connection, keyed by id.

    Every request goes out with a deadline (`Request.deadline`, this
    process's wall clock) after which the worker discards it.  A call is
    reported failed only once that deadline and `grace` have passed, so a
    command reported as failed is never carried out afterwards.
    """

    def __init__(self, grace: float = DEADLINE_GRACE) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self.grace = grace
        self.term = 0  # stamped on every request (the leader's term, masters on etcd)

    def next_id(self) -> int:
        return next(self._ids)

    async def call(
        self,
        conn: Connection,
        make: Callable[[int], Request],
        expect: type[R],
        timeout: float = 10.0,
        deliver_within: float = 0.0,
    ) -> R:
        """Send ``make(id)`` and wait up to ``timeout`` for its reply, an ``expect``.

        The request must reach the worker within ``deliver_within`` seconds
        (default and at most: ``timeout``).  An `Error` reply raises
        `CallError` with the worker's message, and so does a reply of
        another type.
        """
        rid = self.next_id()
        msg = make(rid)
        msg.deadline = time.time() + min(deliver_within or timeout, timeout)
        msg.term = self.term
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            reply = await self._exchange(conn, msg, fut, timeout)
        finally:
            self._pending.pop(rid, None)
            if fut.done() and not fut.cancelled():
                # `fail_all` may have failed it while the send was still under
                # way; the send's own error is what the caller gets, and asyncio
                # would log this one as "never retrieved".
                fut.exception()
        if isinstance(reply, Error):
            raise CallRefused(reply.message)
        if isinstance(reply, expect):
            return reply
        raise CallError(f"{conn.peer} answered {type(msg).__name__} with {type(reply).__name__}")

    async def _exchange(
        self, conn: Connection, msg: Request, fut: asyncio.Future[Message], timeout: float
    ) -> Message:
        """Send ``msg``, wait for ``fut``; a failure is reported after ``msg``'s deadline."""
        try:
            await conn.send(msg)
            async with asyncio.timeout(timeout):  # wakes the caller in one step, not three
                return await fut
        except TimeoutError:
            await self._expire(msg.deadline)
            raise CallError(f"no reply from {conn.peer} within {timeout:g}s") from None
        except ConnectionClosed as e:
            await self._expire(msg.deadline)
            raise CallError(f"connection to {conn.peer} lost: {e}") from None
        except CallError:
            await self._expire(msg.deadline)
            raise

    async def _expire(self, expires: float) -> None:
        """Wait until a request sent with deadline ``expires`` can no longer be acted on."""
        left = expires + self.grace - time.time()
        if left > 0:
            await asyncio.sleep(left)

    def resolve(self, msg: Message) -> bool:
        """Hand a reply to its waiter; False if ``msg`` is not an awaited reply."""
        if not isinstance(msg, REPLIES):
            return False
        fut = self._pending.get(msg.id)
        if fut is None or fut.done():
            return False
        fut.set_result(msg)
        return True

    def fail_all(self, reason: str) -> None:
        """Fail every waiter (the connection is gone)."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CallError(reason))
        self._pending.clear()
