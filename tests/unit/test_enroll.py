"""The enrollment exchange itself, with the real CA: what the token proofs bind.

Over plain loopback sockets (the TLS around it is tested in
tests/integration/test_tls.py): a man in the middle who relays frames can
neither swap the CSR for his own key nor hand the worker another CA.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from corral.daemon import keygen
from corral.master.ca import CA
from corral.transport import handshake, keys, tls
from corral.transport.auth import AuthError
from corral.transport.connection import Connection
from corral.transport.messages import Challenge, Enroll, Enrolled, Message

pytestmark = pytest.mark.timeout(30)
TOKEN = "t" * 64

Rewrite = Callable[[Message], Message]


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "ca").open()


async def serve(
    handler: Callable[[Connection], Awaitable[None]],
) -> AsyncIterator[tuple[str, int]]:
    tasks: set[asyncio.Task[Any]] = set()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        conn = Connection(reader, writer)
        try:
            await handler(conn)
        except (AuthError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await conn.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        if tasks:  # every connection closed before the loop is
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def dial(address: tuple[str, int]) -> Connection:
    return Connection(*await asyncio.open_connection(*address))


def master(ca: CA, token: str = TOKEN) -> Callable[[Connection], Awaitable[None]]:
    def sign(name: str, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_node(name, csr), ca.cert_der

    async def run(conn: Connection) -> None:
        await handshake.accept_enroll(conn, token, sign, lambda name: None)

    return run


def relay(upstream: tuple[str, int], rewrite: Rewrite) -> Callable[[Connection], Awaitable[None]]:
    """A man in the middle: passes frames both ways, ``rewrite`` applied to each."""

    async def run(conn: Connection) -> None:
        up = await dial(upstream)

        async def pump(src: Connection, dst: Connection) -> None:
            while True:
                await dst.send(rewrite(await src.recv()))

        pumps = [asyncio.create_task(pump(conn, up)), asyncio.create_task(pump(up, conn))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await up.close()

    return run


async def enroll(address: tuple[str, int], token: str = TOKEN) -> tuple[Enrolled, Any]:
    key = keys.new_key()
    conn = await dial(address)
    try:
        return await handshake.enroll(conn, token, "n1", keys.csr_der(key, "n1")), key
    finally:
        await conn.close()


async def test_enrollment_gives_a_certificate_for_the_nodes_own_key(ca: CA) -> None:
    async for address in serve(master(ca)):
        done, key = await enroll(address)
    cert = x509.load_der_x509_certificate(done.cert)
    assert tls.cert_info(done.cert).name == "n1"
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    assert done.ca == ca.cert_der
    cert.verify_directly_issued_by(ca.cert)
    assert ca.allowed("n1", cert.serial_number) is None


async def test_a_wrong_token_gets_no_certificate(ca: CA) -> None:
    async for address in serve(master(ca)):
        with pytest.raises(AuthError, match="enrollment refused: wrong cluster token"):
            await enroll(address, token="not-the-token")
    assert ca.nodes == {}


async def test_a_relay_cannot_swap_in_its_own_key(ca: CA) -> None:
    mine = keys.csr_der(keys.new_key(), "n1")

    def swap(msg: Message) -> Message:
        if isinstance(msg, Enroll):
            return Enroll(version=msg.version, name=msg.name, nonce=msg.nonce, csr=mine)
        return msg

    async for upstream in serve(master(ca)):
        async for address in serve(relay(upstream, swap)):
            with pytest.raises(AuthError, match="wrong cluster token"):
                await enroll(address)
    assert ca.nodes == {}


async def test_a_relay_cannot_hand_the_worker_another_ca(ca: CA, tmp_path: Path) -> None:
    other = CA(tmp_path / "other").open()

    def swap(msg: Message) -> Message:
        if isinstance(msg, Enrolled):
            return Enrolled(cert=msg.cert, ca=other.cert_der, proof=msg.proof)
        return msg

    async for upstream in serve(master(ca)):
        async for address in serve(relay(upstream, swap)):
            with pytest.raises(AuthError, match="master failed authentication"):
                await enroll(address)


async def test_a_master_without_the_token_is_not_believed(ca: CA, tmp_path: Path) -> None:
    """An impostor that takes any proof and signs with its own CA."""
    own = CA(tmp_path / "impostor").open()

    async def impostor(conn: Connection) -> None:
        ask = await conn.recv()
        assert isinstance(ask, Enroll)
        await conn.send(Challenge(version=ask.version, nonce=b"x" * 32, proof=b""))
        await conn.recv()  # the worker's proof: taken, unchecked
        cert = own.sign_node(ask.name, ask.csr)
        await conn.send(Enrolled(cert=cert, ca=own.cert_der, proof=b"y" * 32))
        await conn.recv()

    async for address in serve(impostor):
        with pytest.raises(AuthError, match="master failed authentication: wrong cluster token"):
            await enroll(address)


async def test_keygen_makes_a_key_under_root_and_never_makes_root_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    files = tls.NodeFiles(root / "tls")
    csr = x509.load_der_x509_csr(await keygen.make(files, "node1"))
    assert csr.is_signature_valid and files.pending_key.stat().st_mode & 0o777 == 0o600
    # A keygen still running when its worker's ROOT was removed (a demo's
    # cleanup): it fails, and leaves nothing where ROOT was.
    gone = tls.NodeFiles(tmp_path / "removed" / "tls")
    with pytest.raises(tls.TlsError, match="cannot make a key"):
        await keygen.make(gone, "node1")
    assert not (tmp_path / "removed").exists()
