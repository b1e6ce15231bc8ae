"""The master over real loopback sockets, against simulated and hostile peers."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from bench.simworkers import SimWorker, facts
from master.control import Master, MasterConfig
from transport import handshake
from transport.auth import AuthError
from transport.codec import encode
from transport.connection import Connection, ConnectionClosed
from transport.messages import PROTOCOL_VERSION, Hello, Register

pytestmark = pytest.mark.timeout(30)
H = 0.3


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Master]:
    m = Master(
        MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path, heartbeat=H)
    )
    await m.start()
    yield m
    await m.stop()


def addr(m: Master) -> tuple[str, int]:
    host, port = m.listen_address.rsplit(":", 1)
    return host, int(port)


async def raw(m: Master) -> Connection:
    reader, writer = await asyncio.open_connection(*addr(m))
    return Connection(reader, writer)


async def good_worker(m: Master, name: str) -> SimWorker:
    w = SimWorker(*addr(m), m.token, name)
    await w.connect()
    w.start_beating()
    await wait_for(lambda: m.cluster.node_state(name) == "alive")
    return w


async def test_token_file_is_private(master: Master) -> None:
    mode = (master.config.state_dir / "token").stat().st_mode & 0o777
    assert mode == 0o600


async def test_wrong_token_refused_and_others_served(master: Master) -> None:
    ok = await good_worker(master, "good")
    bad = SimWorker(*addr(master), "not-the-token", "intruder")
    with pytest.raises(AuthError, match="wrong cluster token"):
        await bad.connect()
    await bad.close()
    assert not master.cluster.has_node("intruder")
    await wait_for(lambda: any("refused" in e.message for e in master.cluster.events))
    beats = ok.seq
    await wait_for(lambda: ok.seq > beats + 1)
    assert master.cluster.node_state("good") == "alive"
    await ok.close()


async def test_version_mismatch_names_both_versions(master: Master) -> None:
    conn = await raw(master)
    with pytest.raises(AuthError, match=f"master speaks {PROTOCOL_VERSION}, worker speaks 99"):
        await handshake.connect(conn, master.token, "future", version=99)
    await conn.close()


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">I", 2**31),  # huge length: refused before any body byte
        struct.pack(">I", 50) + b"short",  # truncated body then EOF
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # not msgpack
        encode(Register(facts=facts("sneaky"))),  # a frame before the handshake
        struct.pack(">I", 20) + msgspec.msgpack.encode({"type": "Hello", "version": "x"}).ljust(20),
    ],
    ids=["huge-length", "truncated", "garbage", "no-handshake", "wrong-types"],
)
async def test_bad_frames_close_only_that_connection(master: Master, payload: bytes) -> None:
    ok = await good_worker(master, "steady")
    conn = await raw(master)
    conn.writer.write(payload)
    await conn.writer.drain()
    conn.writer.write_eof()
    with pytest.raises((ConnectionClosed, AuthError, Exception)):
        while True:
            await asyncio.wait_for(conn.recv(), 5)
    await conn.close()
    assert not master.cluster.has_node("sneaky")
    beats = ok.seq
    await wait_for(lambda: ok.seq > beats + 1)
    assert master.cluster.node_state("steady") == "alive"
    await ok.close()


async def test_hello_then_silence_times_out_cleanly(master: Master) -> None:
    conn = await raw(master)
    await conn.send(Hello(version=PROTOCOL_VERSION, name="mute", nonce=b"n" * 32))
    challenge = await conn.recv()
    assert type(challenge).__name__ == "Challenge"
    await conn.close()  # vanish mid-handshake
    ok = await good_worker(master, "after")
    assert master.cluster.node_state("after") == "alive"
    await ok.close()


async def test_duplicate_name_refused_not_merged(master: Master) -> None:
    first = await good_worker(master, "twin")
    second = SimWorker(*addr(master), master.token, "twin")
    with pytest.raises(AuthError, match="already connected"):
        await second.connect()
    await second.close()
    assert master.server is not None
    link = master.server.links["twin"]
    beats = first.seq
    await wait_for(lambda: first.seq > beats + 1)
    assert master.cluster.node("twin").address == link.conn.peer  # still the first one
    assert master.cluster.node("twin").state == "alive"
    await first.close()


async def test_suspect_lost_and_back(master: Master) -> None:
    w = await good_worker(master, "flaky")
    w.beating = False
    await wait_for(lambda: master.cluster.node_state("flaky") == "suspect", 3)
    await wait_for(lambda: master.cluster.node_state("flaky") == "lost", 3)
    lost = next(e for e in master.cluster.events if e.kind == "node.lost")
    # The contract: lost is reported no later than 2H + 10% after the last beat.
    assert lost.ts - master.cluster.node("flaky").last_beat <= 2 * H * 1.1
    # Lost: the master stopped writing to it and dropped the connection.
    assert w.conn is not None
    await wait_for(w.conn.reader.at_eof, 3)
    assert "flaky" not in master.server.links  # type: ignore[union-attr]
    back = await good_worker(master, "flaky")  # the worker reconnects, as a real one does
    assert master.cluster.node_state("flaky") == "alive"
    kinds = [e.kind for e in master.cluster.events if e.node == "flaky"]
    assert kinds == ["node.joined", "node.suspect", "node.lost", "node.back"]
    await w.close()
    await back.close()


async def test_events_are_kept_in_state_dir(master: Master) -> None:
    w = await good_worker(master, "logged")
    await w.close()
    text = (master.config.state_dir / "events.log").read_text()
    assert '"node.joined"' in text and "logged" in text


async def test_a_lost_nodes_name_can_be_taken_over(master: Master) -> None:
    old = await good_worker(master, "phoenix")
    old.beating = False  # a half-open connection: nothing arrives, nothing closes
    await wait_for(lambda: master.cluster.node_state("phoenix") == "lost", 3)
    new = await good_worker(master, "phoenix")
    assert master.server is not None
    assert master.server.links["phoenix"].conn.peer == master.cluster.node("phoenix").address
    old.beating = True  # the stale connection was closed: its beats count for nothing
    assert old.conn is not None
    stale = old.conn.reader
    await wait_for(stale.at_eof, 5)  # the master closed the stale connection
    assert master.cluster.node_state("phoenix") == "alive"
    kinds = [e.kind for e in master.cluster.events if e.node == "phoenix"]
    assert kinds[-1] == "node.back"
    await old.close()
    await new.close()
