"""The API's HTTP/1.1 server, spoken to over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from corral.master.httpd import (
    MAX_BODY,
    MAX_HEAD,
    HttpServer,
    Request,
    Response,
    Stream,
    json_response,
)

REPO = Path(__file__).resolve().parents[2]


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
        # "\xb2" is latin-1 "²", and "²".isdigit() is True: it once crashed int()
        (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400, "bad Content-Length"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\xb9\r\n\r\n", 400, "bad Content-Length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            400,
            "bad Content-Length",
            id="content-length-of-5000-digits",
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "more than"),
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
    assert raw.count(b"\n") == raw.partition(b"\r\n\r\n")[0].count(b"\n") + 2  # one-line body
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


# --- limits: the token before the body, timeouts, caps -------------------------------


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def token_gate(req: Request) -> Response | None:
    if req.headers.get("authorization") == "Bearer sesame":
        return None
    return json_response({"error": "auth refused"}, 401)


@pytest.fixture
async def gated() -> AsyncIterator[tuple[App, HttpServer, int]]:
    app = App()
    server = HttpServer(app, gate=token_gate)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield app, server, port
    finally:
        await server.stop()


@pytest.mark.parametrize("auth", [b"", b"Authorization: Bearer wrong\r\n"], ids=["none", "wrong"])
@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["plain", "expect"])
async def test_a_refused_request_is_answered_and_closed_before_its_body(
    gated, auth: bytes, expect: bytes
) -> None:
    app, server, port = gated
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /up HTTP/1.1\r\nContent-Length: %d\r\n%s%s\r\n" % (MAX_BODY, auth, expect))
    # Not one byte of the 4 MiB body is sent: the answer and the close must come anyway.
    raw = await asyncio.wait_for(reader.read(), 5)
    status, body = status_and_body(raw)
    assert (status, body) == (401, {"error": "auth refused"})
    assert b"100 Continue" not in raw and b"Connection: close" in raw
    await wait_until(lambda: server.connections == 0, "the server to drop the connection")
    writer.close()
    assert app.seen == []


async def test_the_gate_lets_a_good_token_through_with_its_body(gated) -> None:
    app, _, port = gated
    raw = await exchange(
        port,
        b"POST /up HTTP/1.1\r\nAuthorization: Bearer sesame\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi",
    )
    assert status_and_body(raw)[0] == 200 and app.seen[-1].body == b"hi"


def test_the_limits_are_the_documented_ones() -> None:
    server = HttpServer(App())
    assert (server.head_timeout, server.keepalive_timeout) == (10.0, 30.0)
    assert server.max_connections == 256 and server.fds.reserve == 32


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One whole response with a Content-Length: its head and its body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_a_head_sent_slowly_is_cut_off_at_the_head_timeout() -> None:
    server = HttpServer(App(), head_timeout=0.4)
    _, port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def dribble() -> None:  # a byte every 20 ms: busy, but never done
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /slowloris HTTP/1.1\r\nX-Padding: " + b"a" * 500:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.02)

    started = time.monotonic()
    sender = asyncio.create_task(dribble())
    try:
        raw = await asyncio.wait_for(reader.read(), 5)
        took = time.monotonic() - started
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
        await server.stop()
    status, body = status_and_body(raw)
    assert status == 408 and "not sent within 0.4 s" in str(body["error"])
    assert 0.35 < took < 1.5


async def test_a_silent_connection_closes_at_the_head_timeout_and_an_idle_one_at_keepalive() -> (
    None
):
    server = HttpServer(App(), head_timeout=0.3, keepalive_timeout=1.0)
    _, port = await server.start("127.0.0.1", 0)
    try:
        silent = await asyncio.open_connection("127.0.0.1", port)
        kept = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        kept[1].write(b"GET /one HTTP/1.1\r\n\r\n")
        head, _ = await read_response(kept[0])
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        assert await asyncio.wait_for(silent[0].read(), 5) == b""  # closed, no answer
        silent_took = time.monotonic() - started
        assert await asyncio.wait_for(kept[0].read(), 5) == b""
        kept_took = time.monotonic() - started
        for _, w in (silent, kept):
            w.close()
    finally:
        await server.stop()
    assert 0.25 < silent_took < 0.9 and 0.95 < kept_took < 2.5


async def test_connections_over_the_cap_get_503_and_are_closed_at_once() -> None:
    app = App()
    server = HttpServer(app, max_connections=3)
    _, port = await server.start("127.0.0.1", 0)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        await wait_until(lambda: server.connections == 3, "three connections served")
        raw = await exchange(port, b"GET /over HTTP/1.1\r\n\r\n")
        status, body = status_and_body(raw)
        assert status == 503 and "3 connections open" in str(body["error"])
        assert server.refused == 1 and app.seen == []
        held.pop()[1].close()
        await wait_until(lambda: server.connections == 2, "a slot to free up")
        raw = await exchange(port, b"GET /now HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert status_and_body(raw)[0] == 200
    finally:
        for _, w in held:
            w.close()
        await server.stop()


# A server in a process of its own, so its open-files limit can be set low: GET /open
# opens a file (as serving a request may need to), /count says how many are open.
_FD_SERVER = """
import asyncio, os, resource, sys
from corral.master.httpd import HttpServer, json_response, Response, Request
soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

async def handler(req: Request) -> Response:
    if req.path == "/open":
        with open("/dev/null") as f:
            return json_response({"fd": f.fileno()})
    return json_response({"open": len(os.listdir("/proc/self/fd")) - 1,
                          "limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]})

async def holder(reader, writer):  # a listener with no budget: the worker port, say
    await reader.read()
    writer.close()

async def main() -> None:
    server = HttpServer(handler)
    _, port = await server.start("127.0.0.1", 0)
    hold = await asyncio.start_server(holder, "127.0.0.1", 0, backlog=2048)
    print(port, hold.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
async def fd_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, int]]:
    soft, hard = request.param
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FD_SERVER, str(soft), str(hard),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        api, hold = map(int, line.split())
        yield api, hold
    finally:
        proc.kill()
        _, err = await proc.communicate()
        assert b"out of system resource" not in err, err.decode()  # accept() never hit EMFILE


async def get_json(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str) -> Any:
    reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    head, body = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


@pytest.mark.parametrize("fd_server", [(1024, 2048)], indirect=True)
async def test_1100_idle_connections_under_a_1024_soft_limit_leave_the_api_reachable(
    fd_server,
) -> None:
    api, hold = fd_server
    idle = [await asyncio.open_connection("127.0.0.1", hold) for _ in range(1100)]
    try:
        fresh = await asyncio.open_connection("127.0.0.1", api)
        status = await get_json(fresh, "/count")
        assert status["limit"] == 2048 and status["open"] > 1100  # raised, and all held
        assert "fd" in await get_json(fresh, "/open")
        fresh[1].close()
    finally:
        for _, w in idle:
            w.close()


@pytest.mark.parametrize("fd_server", [(128, 128)], indirect=True)
async def test_a_flood_is_turned_away_before_it_eats_the_fd_reserve(fd_server) -> None:
    api, _ = fd_server
    mine = await asyncio.open_connection("127.0.0.1", api)
    assert "fd" in await get_json(mine, "/open")
    flood = [await asyncio.open_connection("127.0.0.1", api) for _ in range(200)]
    try:
        answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 0.5) for r, _ in flood),
                                       return_exceptions=True)  # fmt: skip
        refused = [a for a in answers if isinstance(a, bytes)]
        assert refused and all(a.startswith(b"HTTP/1.1 503") for a in refused)
        assert b"out of file descriptors" in refused[0]
        # The connection that was there first still gets served, files and all.
        status = await get_json(mine, "/count")
        assert status["limit"] == 128 and status["open"] <= 128 - 32
        assert "fd" in await get_json(mine, "/open")
    finally:
        for _, w in flood:
            w.close()
        mine[1].close()
