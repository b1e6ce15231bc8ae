"""The CLI's own HTTP/1.1 client against real sockets that misbehave on purpose.

Each case is a listening socket on 127.0.0.1 port 0 whose accepting thread
answers with the bytes given (or nothing): the client must turn every one
into the same one-line errors `http.client` gave, and read what a good
server sends (sized, chunked, to-close bodies; NDJSON lines split anywhere).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from corral.client import Client
from corral.master.verbs.base import ApiError, CommandError, Unreachable


@contextmanager
def server(*pieces: bytes, hold: bool = False) -> Iterator[str]:
    """A one-connection server sending ``pieces`` after the request head; the address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            for piece in pieces:
                conn.sendall(piece)
            if hold:
                done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(10)
        listener.close()


def test_a_sized_reply_and_a_reply_to_close() -> None:
    body = b'{"nodes": []}'
    with server(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)) as api:
        assert Client(api, "t").request("GET", "/v1/nodes") == {"nodes": []}
    with server(b"HTTP/1.1 200 OK\r\n\r\n", b'{"a"', b": 1}") as api:
        assert Client(api, "t").request("GET", "/x") == {"a": 1}


def test_chunked_ndjson_lines_split_anywhere() -> None:
    lines = b'{"n": 1}\n{"n": 2}\n\n{"n": 3}\n'
    chunks = [lines[:5], lines[5:13], lines[13:]]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    with server(head, wire[:7], wire[7:]) as api:
        assert list(Client(api, "t").stream("/s")) == [{"n": 1}, {"n": 2}, {"n": 3}]


def fails(pieces: tuple[bytes, ...], kind: type[CommandError], match: str) -> CommandError:
    """The error a request to a server sending ``pieces`` raises (it must match)."""
    with server(*pieces, hold=not pieces) as api, pytest.raises(kind, match=match) as e:
        Client(api, "t", timeout=0.3).request("GET", "/x")
    return e.value


def test_errors_are_the_same_one_liners() -> None:
    reply = b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\nboom\n"
    fails((reply,), ApiError, r"^the master answered HTTP 500: boom$")
    err = b'{"error": "bad\\n token"}'
    reply = b"HTTP/1.1 401 No\r\nContent-Length: %d\r\n\r\n%s" % (len(err), err)
    fails((reply,), ApiError, r"^bad token \(check CORRAL_TOKEN or --state-dir\)$")
    cut = fails((b"HTTP/1.1 200 OK\r\nContent-Le",), Unreachable, r": the connection closed early$")
    assert isinstance(cut, Unreachable) and cut.connected
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html>"
    fails((short,), Unreachable, r": the connection closed early$")
    html = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>"
    fails((html,), CommandError, r"sent a reply that is not JSON$")
    fails((b"SSH-2.0-OpenSSH_9.2\r\n",), Unreachable, r"a reply that is not HTTP")


def test_a_silent_master_times_out() -> None:
    fails((), Unreachable, r"^cannot reach the master at .*: timed out$")


def test_query_values_are_percent_encoded() -> None:
    got: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            got.append(conn.recv(65536))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    api = f"127.0.0.1:{listener.getsockname()[1]}"
    Client(api, "t").request("GET", "/v1/logs", target="n1:4", tail="all", follow=True, x=None)
    thread.join(10)
    listener.close()
    assert got[0].split(b"\r\n")[0] == b"GET /v1/logs?target=n1%3A4&tail=all&follow=1 HTTP/1.1"
