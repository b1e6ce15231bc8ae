"""A small HTTP/1.1 server for the control API, on asyncio streams.

The API needs little of HTTP: requests with a JSON body or a query string,
JSON replies, and one kind of stream (NDJSON lines, sent chunked).  A
general framework's request and response machinery cost about 0.2 ms of a
launch round trip that is itself about 2 ms, so this module does just that
much, strictly:

- one request at a time per connection, kept alive as HTTP/1.1 says;
- a body only with ``Content-Length`` (at most `MAX_BODY`), and
  ``Expect: 100-continue`` answered;
- a head of at most `MAX_HEAD` bytes; a connection that sends no whole
  head within `IDLE_TIMEOUT`, or no whole body within `BODY_TIMEOUT`,
  is closed;
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
from urllib.parse import parse_qsl, urlsplit

import msgspec

log = logging.getLogger("corral.api")

MAX_HEAD = 64 * 1024  # request line and headers
MAX_BODY = 4 * 1024 * 1024
IDLE_TIMEOUT = 120.0  # seconds a connection may take to send the next whole head
BODY_TIMEOUT = 30.0  # seconds to send the body the head announced

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


class BadRequest(Exception):
    """The client broke the protocol: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(body: object, status: int = 200) -> Response:
    return Response(status, _json.encode(body))


class HttpServer:
    """Serve ``handler`` over HTTP/1.1 on one listening socket."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; the address actually bound (port 0 picks one)."""
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD)
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                req, keep = await _read_request(head, reader, writer)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    _refuse(writer, 400, "request cut short")
                return  # or closed between requests
            except BadRequest as e:
                _refuse(writer, e.status, str(e))
                return
            except asyncio.LimitOverrunError:
                _refuse(writer, 431, f"request head over {MAX_HEAD} bytes")
                return
            except TimeoutError:
                return
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


async def _read_request(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[Request, bool]:
    """The request with ``head`` (line and headers), and whether the connection stays open."""
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
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "request bodies must come with Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise BadRequest(400, f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > MAX_BODY:
        raise BadRequest(413, f"request body over {MAX_BODY} bytes")
    if length and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = b""
    if length:
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await reader.readexactly(length)
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method, url.path, query, headers, body), keep


def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Answer a broken request with one JSON line; the connection then closes."""
    _send(writer, status, _json.encode({"error": message}), "application/json", False)


def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, keep: bool
) -> None:
    head = [
        f"HTTP/1.1 {status} {_reason(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if not keep:
        head.append("Connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


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
