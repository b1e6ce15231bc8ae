"""The master over real loopback sockets, against simulated and hostile peers."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from bench.simworkers import SimWorker, certs, facts
from corral.master.control import Master, MasterConfig
from corral.transport import handshake
from corral.transport.auth import AuthError
from corral.transport.codec import encode
from corral.transport.connection import Connection, ConnectionClosed
from corral.transport.messages import PROTOCOL_VERSION, Hello, Register

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


async def certified(m: Master, name: str) -> Connection:
    """A TLS connection with a certificate for ``name`` (enrolled first), before any frame."""
    host, port = addr(m)
    ctx = await certs().context(host, port, m.token, name)
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
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


async def test_the_state_dir_is_private_even_when_it_was_not(tmp_path: Path) -> None:
    state = tmp_path / "open"
    state.mkdir(mode=0o755)
    state.chmod(0o755)  # as an older corral left it
    m = Master(MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=state))
    await m.start()
    try:
        assert state.stat().st_mode & 0o777 == 0o700
        fresh = tmp_path / "fresh" / "state"
        assert not fresh.exists()
    finally:
        await m.stop()
    m2 = Master(MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=fresh))
    await m2.start()
    try:
        assert fresh.stat().st_mode & 0o777 == 0o700
    finally:
        await m2.stop()


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
    conn = await certified(master, "future")
    with pytest.raises(AuthError, match=f"master speaks {PROTOCOL_VERSION}, worker speaks 99"):
        await handshake.connect_channel(conn, "future", version=99)
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
    # Inside TLS, from a peer with a certificate: a plaintext one never gets this far.
    ok = await good_worker(master, "steady")
    conn = await certified(master, "sneaky")
    conn.writer.write(payload)
    await conn.writer.drain()  # (no half-close in TLS: a truncated frame waits out the handshake)
    with pytest.raises((ConnectionClosed, AuthError, Exception)):
        while True:
            await asyncio.wait_for(conn.recv(), handshake.HANDSHAKE_TIMEOUT + 3)
    await conn.close()
    assert not master.cluster.has_node("sneaky")
    beats = ok.seq
    await wait_for(lambda: ok.seq > beats + 1)
    assert master.cluster.node_state("steady") == "alive"
    await ok.close()


async def test_hello_then_silence_times_out_cleanly(master: Master) -> None:
    conn = await certified(master, "mute")
    await conn.send(Hello(version=PROTOCOL_VERSION, name="mute", nonce=b""))
    welcome = await conn.recv()
    assert type(welcome).__name__ == "Welcome"
    await conn.close()  # vanish before registering
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


@pytest.mark.parametrize("name", ["../up", "a/b", "..", "tab\there", "bell\x07", "x:1"])
async def test_names_that_could_be_paths_or_targets_are_refused(master: Master, name: str) -> None:
    # A node's name becomes part of local paths (fetch's DIR/ID/INDEX-NODE) and targets.
    worker = SimWorker(*addr(master), master.token, name)
    with pytest.raises(AuthError, match="invalid worker name"):
        await worker.connect()
    await worker.close()
    assert not master.cluster.has_node(name)


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
    assert kinds == ["node.enrolled", "node.joined", "node.suspect", "node.lost", "node.back"]
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


# --- before the handshake: little memory, few places, short time ---------------


async def test_an_unauthenticated_peer_cannot_announce_a_big_frame(master: Master) -> None:
    conn = await certified(master, "big")
    reader, writer = conn.reader, conn.writer
    writer.write(struct.pack(">I", 16 * 1024 * 1024) + b"\x81" * 1024)  # a "16 MiB hello"
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) is not None  # closed without waiting
    assert reader.at_eof()
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: any("exceeds the 4096-byte" in e.message for e in master.cluster.events))
    ok = await good_worker(master, "after-big")  # and a real worker is served
    await ok.close()


async def test_handshakes_under_way_are_capped_per_address(master: Master) -> None:
    from corral.master.server import MAX_UNAUTHENTICATED_PER_HOST

    silent = [
        await asyncio.open_connection(*addr(master)) for _ in range(MAX_UNAUTHENTICATED_PER_HOST)
    ]
    assert master.server is not None
    await wait_for(lambda: master.server._unauthenticated["127.0.0.1"] == len(silent))  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(*addr(master))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # turned away at once
    writer.close()
    await writer.wait_closed()
    assert all(not r.at_eof() for r, _ in silent)  # the others still wait their turn
    for _, w in silent:
        w.close()
        await w.wait_closed()
    await wait_for(lambda: not master.server._unauthenticated)  # type: ignore[union-attr]
    ok = await good_worker(master, "after-crowd")
    await ok.close()


async def test_a_silent_peer_is_closed_after_the_handshake_deadline(master: Master) -> None:
    reader, writer = await asyncio.open_connection(*addr(master))
    began = time.monotonic()
    assert await asyncio.wait_for(reader.read(), handshake.HANDSHAKE_TIMEOUT + 5) == b""
    assert time.monotonic() - began >= handshake.HANDSHAKE_TIMEOUT * 0.9
    writer.close()
    await writer.wait_closed()


async def test_a_beat_with_nan_or_infinite_metrics_is_clamped(master: Master) -> None:
    from corral.transport.messages import Heartbeat, Metrics

    w = await good_worker(master, "odd")
    w.beating = False
    assert w.conn is not None
    bad = Metrics(cpu_percent=float("nan"), load1=float("inf"), mem_used=-5, mem_total=100)
    await w.conn.send(Heartbeat(seq=99, metrics=bad))
    await wait_for(lambda: master.cluster.node("odd").mem_total == 100)
    view = master.cluster.node("odd")
    assert (view.cpu_percent, view.load1, view.mem_used) == (0.0, 1e6, 0)
    assert msgspec.json.decode(msgspec.json.encode(view))["cpu_percent"] == 0.0
    await w.close()


async def test_every_beat_is_answered(master: Master) -> None:
    from corral.transport.messages import Heartbeat, Metrics, Pong

    w = SimWorker(*addr(master), master.token, "pinged")
    await w.connect()
    assert w.conn is not None
    await w.conn.send(Heartbeat(seq=7, metrics=Metrics()))
    reply = await asyncio.wait_for(w.conn.recv(), 5)
    assert reply == Pong(seq=7)
    await w.close()


def test_a_failed_tls_handshake_is_said_in_words() -> None:
    from corral.master.server import _tls_why

    assert _tls_why(TimeoutError()) == "timed out"
    assert _tls_why(ConnectionResetError()) == "the peer closed the connection"  # was ""
    assert _tls_why(EOFError()) == "the peer closed the connection"
    assert _tls_why(ConnectionResetError(104, "Connection reset by peer")).endswith("by peer")
    assert _tls_why(ValueError()) == "ValueError"
    err = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    err.reason = "WRONG_VERSION_NUMBER"
    assert _tls_why(err) == "WRONG_VERSION_NUMBER"
