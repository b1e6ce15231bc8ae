"""transport.streams: frames of every size arrive whole through the reused read buffer.

Over plain TCP and over TLS (uvloop's, as the master and workers run), a
frame larger than the buffer crosses it in pieces and comes out whole.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import uvloop

from corral.master.ca import CA
from corral.transport import keys, streams, tls
from corral.transport.connection import Connection
from corral.transport.limits import start_server
from corral.transport.messages import LogChunk

pytestmark = pytest.mark.timeout(30)
SIZES = [1, 100, streams.BUFFER - 10, streams.BUFFER * 3 + 7, 1 << 20]


def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = CA(tmp_path / "ca").open()
    ca.write_server_cert(["127.0.0.1"])
    files = tls.NodeFiles(tmp_path / "node")
    files.dir.mkdir()
    key = keys.new_key()
    tls.write_private(files.key, keys.key_pem(key))
    files.store(ca.sign_node("n1", keys.csr_der(key, "n1")), ca.cert_der)
    return ca.channel_context(), files.context()


async def echo_sizes(server_ctx: ssl.SSLContext | None, client_ctx: ssl.SSLContext | None) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        for _ in SIZES:
            await conn.send(await conn.recv())
        await conn.close()

    server = await start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    where = {"ssl": client_ctx, "server_hostname": "127.0.0.1"} if client_ctx else {}
    conn = Connection(*await streams.open_connection("127.0.0.1", port, **where))
    try:
        for size in SIZES:
            data = bytes(i % 251 for i in range(size))
            await conn.send(LogChunk(id=1, offset=0, data=data))
            back = await conn.recv()
            assert isinstance(back, LogChunk) and back.data == data
    finally:
        await conn.close()
        server.close()
        await server.wait_closed()


def test_frames_of_every_size_over_plain_tcp() -> None:
    uvloop.run(echo_sizes(None, None))


def test_frames_of_every_size_over_tls(tmp_path: Path) -> None:
    uvloop.run(echo_sizes(*contexts(tmp_path)))
