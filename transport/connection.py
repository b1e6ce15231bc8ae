"""The connection object: moves whole frames over an asyncio stream.

It knows framing, not meaning.  `Calls` pairs requests with the replies that
echo their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from corral.transport.codec import HEADER_SIZE, FrameError, body_length, decode_body, encode
from corral.transport.messages import MAX_FRAME, REPLIES, Message, Request

# Added to a request's deadline before the master calls it failed: covers the
# error in the worker's reading of the master's clock (at most the one-way
# latency of the Welcome it learned it from) and the reply's trip back.
DEADLINE_GRACE = 0.25


class ConnectionClosed(Exception):
    """The peer went away (EOF or reset)."""


class Connection:
    """A framed message stream over an asyncio reader/writer pair."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int = MAX_FRAME
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limit = limit
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def recv(self) -> Message:
        """The next message; `ConnectionClosed` at EOF, `FrameError` on a bad frame."""
        try:
            header = await self.reader.readexactly(HEADER_SIZE)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise FrameError(f"truncated header: {len(e.partial)} bytes then EOF") from None
            raise ConnectionClosed("peer closed the connection") from None
        except (ConnectionError, OSError) as e:
            raise ConnectionClosed(str(e)) from None
        n = body_length(header, self.limit)
        try:
            body = await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise FrameError(f"truncated frame: {len(e.partial)} of {n} bytes then EOF") from None
        except (ConnectionError, OSError) as e:
            raise ConnectionClosed(str(e)) from None
        return decode_body(body)

    def abort(self) -> None:
        """Drop the connection now, discarding whatever is still queued to send."""
        self.writer.transport.abort()

    def send_nowait(self, msg: Message) -> None:
        """Queue ``msg`` without waiting for the socket buffer to drain."""
        if self.writer.is_closing():
            raise ConnectionClosed("connection is closing")
        self.writer.write(encode(msg))

    async def send(self, msg: Message) -> None:
        self.send_nowait(msg)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise ConnectionClosed(str(e)) from None

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class CallError(Exception):
    """A request failed: the worker replied with an error, timed out or went away."""


class Calls:
    """Pending requests on one connection, keyed by id.

    Every request goes out with a deadline (`Request.deadline`, this
    process's wall clock) after which the worker discards it.  A call is
    reported failed only once that deadline and `grace` have passed, so a
    command reported as failed is never carried out afterwards.
    """

    def __init__(self, grace: float = DEADLINE_GRACE) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.grace = grace

    def next_id(self) -> int:
        return next(self._ids)

    async def call(
        self, conn: Connection, make: Any, timeout: float = 10.0, deliver_within: float = 0.0
    ) -> Any:
        """Send ``make(id)`` and wait up to ``timeout`` for the reply with that id.

        ``make`` is a request class or any callable taking the id.  The
        request must reach the worker within ``deliver_within`` seconds
        (default and at most: ``timeout``).  An `Error` reply raises
        `CallError` with the worker's message.
        """
        rid = self.next_id()
        msg = make(rid)
        window = min(deliver_within or timeout, timeout)
        expires = time.time() + window
        if isinstance(msg, Request):
            msg.deadline = expires
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await conn.send(msg)
            async with asyncio.timeout(timeout):  # wakes the caller in one step, not three
                reply = await fut
        except TimeoutError:
            await self._expire(expires)
            raise CallError(f"no reply from {conn.peer} within {timeout:g}s") from None
        except ConnectionClosed as e:
            await self._expire(expires)
            raise CallError(f"connection to {conn.peer} lost: {e}") from None
        except CallError:
            await self._expire(expires)
            raise
        finally:
            self._pending.pop(rid, None)
        if type(reply).__name__ == "Error":
            raise CallError(reply.message)
        return reply

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
