"""A small HTTP/1.1 server for the control API, on asyncio streams.

The API needs little of HTTP: requests with a JSON body or a query string,
JSON replies, and one kind of stream (NDJSON lines, sent chunked).  A
general framework's request and response machinery cost about 0.2 ms of a
launch round trip that is itself about 2 ms, so this module does just that
much, strictly:

- one request at a time per connection, kept alive as HTTP/1.1 says;
- a request line and headers of at most `MAX_HEAD` bytes, whole within
  `HEAD_TIMEOUT` seconds of the connection (or of a kept-alive request's
  first byte); a kept-alive connection idle for `KEEPALIVE_TIMEOUT` closes;
- the ``gate`` (the API's token check) sees the head before a single body
  byte is read; a request it refuses is answered and its connection closed;
- a body only with ``Content-Length`` (ASCII digits, at most `MAX_BODY`),
  whole within `BODY_TIMEOUT`, and ``Expect: 100-continue`` answered once
  the gate has passed;
- at most `MAX_CONNECTIONS` connections, and none that would leave fewer
  than `FD_RESERVE` file descriptors free: beyond that a new connection is
  answered 503 and closed (at once when descriptors are short; otherwise
  after its client has read the answer, within `LINGER_TIMEOUT`);
- anything else malformed gets a 4xx JSON error and the connection closes.

A stream stops when its client goes away, even while it has nothing to
send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from ssl import SSLContext
from urllib.parse import parse_qsl, urlsplit

import msgspec

from corral.transport.limits import FdBudget, GuardedServer, raise_nofile_limit, start_server

log = logging.getLogger("corral.api")

MAX_HEAD = 64 * 1024  # request line and headers
MAX_BODY = 4 * 1024 * 1024
HEAD_TIMEOUT = 10.0  # seconds to send a whole request line and headers
KEEPALIVE_TIMEOUT = 30.0  # seconds a kept-alive connection may wait before its next request
BODY_TIMEOUT = 30.0  # seconds to send the body the head announced (after the gate passed)
MAX_CONNECTIONS = 256  # open at once, streams included
FD_RESERVE = 32  # descriptors left free (the worker listener should keep more)
LINGER_TIMEOUT = 2.0  # seconds a refused connection is drained before its close

_json = msgspec.json.Encoder()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Stream:
    """A 200 reply sent chunk by chunk as ``chunks`` yields them."""

    chunks: AsyncIterator[bytes]
    content_type: str = "application/x-ndjson"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response | Stream]]
# Sees a request before its body is read (``body`` is still empty): None lets
# it through, a Response refuses it (sent, then the connection closes).
Gate = Callable[[Request], Response | None]


class BadRequest(Exception):
    """The client broke the protocol: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(body: object, status: int = 200) -> Response:
    return Response(status, _json.encode(body))


class HttpServer:
    """Serve ``handler`` over HTTP/1.1 on one listening socket.

    ``gate`` is asked about every request as soon as its head is in,
    before its body is read.  The timeouts and caps default to the module's
    constants; tests pass small ones.
    """

    def __init__(
        self,
        handler: Handler,
        gate: Gate | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        fd_reserve: int = FD_RESERVE,
        head_timeout: float = HEAD_TIMEOUT,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.gate = gate
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.keepalive_timeout = keepalive_timeout
        self.body_timeout = body_timeout
        self.fds = FdBudget(fd_reserve)
        self.refused = 0  # connections turned away over max_connections
        self._lingering = 0  # of those, the ones still draining before their close
        self._server: GuardedServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> tuple[str, int]:
        """Listen (over TLS with ``ssl``); the address actually bound (port 0 picks one)."""
        limit = raise_nofile_limit()
        log.debug("open-files limit %d", limit)
        short = _error_bytes(503, "server busy: out of file descriptors; try again")
        self._server = await start_server(
            self._accept,
            host,
            port,
            budget=self.fds,
            limit=MAX_HEAD,
            refusal=short,
            ssl=ssl,
            ssl_handshake_timeout=None if ssl is None else self.head_timeout,
        )
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def stop(self) -> None:
        """Stop listening and end every connection, streams included."""
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    @property
    def connections(self) -> int:
        """Connections being served now (kept alive or streaming too), not those turned away."""
        return len(self._conns) - self._lingering

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # (A connection that would eat into the descriptor reserve never gets here:
        # the accept loop answers it 503 and closes it.)
        task = asyncio.current_task()
        assert task is not None
        busy = self.connections >= self.max_connections
        self._conns.add(task)  # even one turned away: stop() must end it
        try:
            if busy:
                await self._turn_away(reader, writer)
            else:
                await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # stop(); ending quietly keeps 3.11's stream callback from logging it
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _turn_away(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer 503; let the client read it (closing on its unread request would reset it)."""
        self.refused += 1
        _refuse(writer, 503, f"server busy: {self.max_connections} connections open; try again")
        if self._lingering >= self.max_connections:
            return  # too many already: close at once
        self._lingering += 1
        try:
            await _linger(reader, writer)
        finally:
            self._lingering -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = asyncio.get_running_loop().time()
        first = True
        while True:
            try:
                got = await self._next_request(reader, writer, accepted if first else None)
            except asyncio.IncompleteReadError:
                _refuse(writer, 400, "request cut short")
                return
            except BadRequest as e:
                _refuse(writer, e.status, str(e))
                return
            if got is None:
                return
            req, keep = got
            first = False
            try:
                reply = await self.handler(req)
            except Exception as e:  # a bug must cost one request, not the server
                log.exception("internal error serving %s %s", req.method, req.path)
                reply = json_response({"error": f"internal error: {type(e).__name__}: {e}"}, 500)
            if isinstance(reply, Stream):
                await _stream(reply, reader, writer)
                return
            _send(writer, reply.status, reply.body, reply.content_type, keep)
            await writer.drain()
            if not keep:
                return

    async def _next_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, accepted: float | None
    ) -> tuple[Request, bool] | None:
        """The next whole request and whether the connection stays open; None: close.

        ``accepted`` is when the connection was accepted, for its first
        request, whose head must be whole within `head_timeout` of it; a
        later request may be awaited `keepalive_timeout`, then its head
        gets `head_timeout` from its first byte.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(
                self.keepalive_timeout if accepted is None else self.head_timeout
            ):
                start = await reader.readexactly(1)
        except (TimeoutError, asyncio.IncompleteReadError):
            return None  # nothing sent: close quietly
        deadline = (loop.time() if accepted is None else accepted) + self.head_timeout
        try:
            async with asyncio.timeout_at(deadline):
                head = start + await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise BadRequest(408, f"request head not sent within {self.head_timeout:g} s") from None
        except asyncio.LimitOverrunError:
            raise BadRequest(431, f"request head over {MAX_HEAD} bytes") from None
        req, length, keep = _parse_head(head)
        refusal = self.gate(req) if self.gate is not None else None
        if refusal is not None:  # not one body byte read
            _send(writer, refusal.status, refusal.body, refusal.content_type, False)
            await writer.drain()
            return None
        req.body = await self._read_body(req, length, reader, writer)
        return req, keep

    async def _read_body(
        self, req: Request, length: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        """The ``length`` bytes of body, once the request may send them."""
        if length > MAX_BODY:
            raise BadRequest(413, f"request body over {MAX_BODY} bytes")
        if not length:
            return b""
        if req.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(self.body_timeout):
                return await reader.readexactly(length)
        except TimeoutError:
            raise BadRequest(408, f"request body not sent within {self.body_timeout:g} s") from None


def _parse_head(head: bytes) -> tuple[Request, int, bool]:
    """The request in ``head`` (body not yet read), its body's length, and keep-alive."""
    first, *lines = head.decode("latin-1").split("\r\n")
    parts = first.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(400, f"malformed header line {line[:40]!r}")
        key = name.lower()
        if key == "content-length" and key in headers:
            raise BadRequest(400, "more than one Content-Length")
        headers[key] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "request bodies must come with Content-Length")
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method, url.path, query, headers), _content_length(headers), keep


def _content_length(headers: dict[str, str]) -> int:
    """``Content-Length`` as a number: ASCII digits only ("²".isdigit() is True)."""
    text = headers.get("content-length", "0")
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise BadRequest(400, f"bad Content-Length {text[:20]!r}")
    return int(text)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drop what the client sends until it closes (bounded), before a close."""
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_TIMEOUT):
            got = 0
            while got <= MAX_HEAD:
                data = await reader.read(MAX_HEAD)
                if not data:
                    return
                got += len(data)


def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Answer a broken request with one JSON line; the connection then closes."""
    writer.write(_error_bytes(status, message))


def _error_bytes(status: int, message: str) -> bytes:
    """A whole ``{"error": message}`` response that closes its connection."""
    return _encode(status, _json.encode({"error": message}), "application/json", False)


def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, keep: bool
) -> None:
    writer.write(_encode(status, body, content_type, keep))


def _encode(status: int, body: bytes, content_type: str, keep: bool) -> bytes:
    """A whole response: status line, headers, ``body``."""
    head = [
        f"HTTP/1.1 {status} {_reason(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if not keep:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def _stream(
    reply: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Send ``reply`` chunked until it ends or the client leaves; then the connection closes."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
    writer.write(
        (
            f"HTTP/1.1 200 OK\r\nContent-Type: {reply.content_type}\r\n{extra}"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
    )

    async def pump() -> None:
        async for chunk in reply.chunks:
            if chunk:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    sender = asyncio.create_task(pump())
    gone = asyncio.create_task(reader.read())  # EOF (or junk): the client is done with us
    try:
        await asyncio.wait([sender, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, gone):
            task.cancel()
        await asyncio.gather(sender, gone, return_exceptions=True)
        aclose = getattr(reply.chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if sender.done() and not sender.cancelled():
        e = sender.exception()
        if e is not None and not isinstance(e, ConnectionError):
            raise e


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"
