"""The API's HTTP/1.1 server, spoken to over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from master.httpd import MAX_BODY, MAX_HEAD, HttpServer, Request, Response, Stream, json_response


class App:
    """Echoes what it was asked; /boom raises; /stream streams until the client leaves."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.stream_closed = asyncio.Event()

    async def __call__(self, req: Request) -> Response | Stream:
        self.seen.append(req)
        if req.path == "/boom":
            raise RuntimeError("kaboom")
        if req.path == "/stream":
            return Stream(self._lines())
        return json_response(
            {"method": req.method, "path": req.path, "query": req.query, "body": req.body.decode()}
        )

    async def _lines(self) -> AsyncIterator[bytes]:
        try:
            yield b'{"n": 1}\n'
            yield b'{"n": 2}\n'
            await asyncio.Event().wait()  # nothing more, ever
            yield b"never"
        finally:
            self.stream_closed.set()


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, int]]:
    app = App()
    server = HttpServer(app)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield app, port
    finally:
        await server.stop()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` raw, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_keep_alive_serves_requests_in_turn_on_one_connection(served) -> None:
    app, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for n in range(3):
        body = json.dumps({"n": n}).encode()
        writer.write(
            b"POST /v1/x?a=1&b=%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
            % (n, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" not in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
        assert reply == {"method": "POST", "path": "/v1/x", "query": {"a": "1", "b": str(n)},
                         "body": body.decode()}  # fmt: skip
    writer.close()
    assert len(app.seen) == 3


async def test_http_1_0_and_connection_close_end_the_connection(served) -> None:
    _, port = served
    for request in (b"GET /a HTTP/1.0\r\n\r\n", b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"):
        raw = await exchange(port, request)  # returns only once the server closes
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close\r\n" in raw


async def test_expect_100_continue_is_answered_before_the_body(served) -> None:
    app, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /up HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    assert app.seen[-1].body == b"hello"


async def test_curl_gets_json_back(served) -> None:
    _, port = served
    big = "x" * 2_000_000  # over curl's threshold for Expect: 100-continue
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--data-binary", "@-", f"http://127.0.0.1:{port}/v1/c?q=z",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(big.encode()), 20)
    reply = json.loads(out)
    assert (reply["query"], len(reply["body"])) == ({"q": "z"}, len(big))


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"NONSENSE\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400, "bad Content-Length"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "Content-Length"),
        (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413, "body over"),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * MAX_HEAD + b"\r\n\r\n", 431, "head over"),
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400, "cut short"),
    ],
)
async def test_broken_requests_get_one_json_error_and_a_close(
    served, request_bytes: bytes, status: int, error: str
) -> None:
    app, port = served
    if b"abc" in request_bytes:  # a body cut short: the client half-closes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    else:
        raw = await exchange(port, request_bytes)
    got_status, body = status_and_body(raw)
    assert got_status == status and error in str(body["error"])
    assert app.seen == []  # nothing reached the application


async def test_a_failing_handler_costs_one_request(served) -> None:
    _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /boom HTTP/1.1\r\n\r\nGET /fine HTTP/1.1\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    assert first.startswith(b"HTTP/1.1 500") and b"internal error: RuntimeError: kaboom" in first
    second = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    assert second.startswith(b"HTTP/1.1 200") and b'"/fine"' in second
    writer.close()


async def test_a_stream_is_chunked_and_ends_when_its_client_leaves(served) -> None:
    app, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"Transfer-Encoding: chunked" in head
    chunks = await asyncio.wait_for(reader.readuntil(b'{"n": 2}\n\r\n'), 5)
    assert chunks == b'9\r\n{"n": 1}\n\r\n9\r\n{"n": 2}\n\r\n'
    writer.close()  # while the stream has nothing to send
    await asyncio.wait_for(app.stream_closed.wait(), 5)


async def test_stop_ends_open_streams() -> None:
    app = App()
    server = HttpServer(app)
    _, port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b'{"n": 2}\n\r\n'), 5)
    await asyncio.wait_for(server.stop(), 5)
    assert app.stream_closed.is_set()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed its end
    writer.close()
