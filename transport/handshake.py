"""Both ends of the handshake, over a `Connection` (inside TLS, see `transport.tls`).

`accept_enroll` and `enroll` run on a connection without a client
certificate: the token proves the worker to the master and the master (and
the CA certificate it hands out) to the worker.  `accept_channel` and
`connect_channel` run on one whose client certificate the TLS layer has
checked: the name the worker says hello with must be its certificate's.

Neither side acts on anything before it completes; every failure sends the
peer a `Refused` with the reason and raises `AuthError` with the same words.
Until it completes a peer may send frames of at most `MAX_HANDSHAKE_FRAME`
bytes, and the whole exchange must be over within `HANDSHAKE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable

from corral.transport import auth
from corral.transport.codec import FrameError
from corral.transport.connection import Connection, ConnectionClosed
from corral.transport.messages import (
    MAX_FRAME,
    MAX_HANDSHAKE_FRAME,
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Enroll,
    Enrolled,
    Hello,
    Message,
    Refused,
    Welcome,
)

HANDSHAKE_TIMEOUT = 5.0  # for the whole exchange, not per frame


def version_mismatch(master: int, worker: int) -> str:
    return f"protocol version mismatch: master speaks {master}, worker speaks {worker}"


async def _recv(conn: Connection, until: float) -> Message:
    """The next handshake frame, which must arrive before loop time ``until``."""
    try:
        async with asyncio.timeout_at(until):
            return await conn.recv()
    except TimeoutError:
        raise auth.AuthError("handshake timed out") from None


async def _refuse(conn: Connection, reason: str) -> auth.AuthError:
    with contextlib.suppress(ConnectionClosed, FrameError):
        await conn.send(Refused(reason=reason))
    return auth.AuthError(reason)


# --- with certificates ----------------------------------------------------------------
Sign = Callable[[str, bytes], tuple[bytes, bytes]]  # (name, csr) -> (cert, ca), DER


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


def enroll_worker_proof(key: bytes, enroll: Enroll, master_nonce: bytes) -> bytes:
    body = _digest(enroll.name.encode(), enroll.csr)
    return auth.proof(key, "corral-enroll-worker", master_nonce + enroll.nonce, body)


def enroll_master_proof(
    key: bytes, worker_nonce: bytes, master_nonce: bytes, cert: bytes, ca: bytes
) -> bytes:
    return auth.proof(key, "corral-enroll-master", worker_nonce + master_nonce, _digest(cert, ca))


async def accept_enroll(
    conn: Connection,
    token: str,
    sign: Sign,
    admit: Callable[[str], str | None],
    timeout: float = HANDSHAKE_TIMEOUT,
    version: int = PROTOCOL_VERSION,
) -> str:
    """Master side of enrollment; returns the name a certificate was issued for.

    ``admit(name)`` returns a reason to refuse the name, or None; ``sign``
    makes the certificate (and may raise ValueError for a bad CSR).  The
    worker proves the token first, so a wrong one is refused here.
    """
    key = token.encode()
    until = asyncio.get_running_loop().time() + timeout
    conn.limit = MAX_HANDSHAKE_FRAME
    ask = await _recv(conn, until)
    if not isinstance(ask, Enroll):
        raise await _refuse(conn, f"expected Enroll, got {type(ask).__name__}")
    if ask.version != version:
        raise await _refuse(conn, version_mismatch(version, ask.version))
    nonce = auth.new_nonce()
    await conn.send(Challenge(version=version, nonce=nonce, proof=b""))
    answer = await _recv(conn, until)
    if isinstance(answer, Refused):
        raise auth.AuthError(f"worker refused: {answer.reason}")
    if not isinstance(answer, Auth):
        raise await _refuse(conn, f"expected Auth, got {type(answer).__name__}")
    if not auth.check(enroll_worker_proof(key, ask, nonce), answer.proof):
        raise await _refuse(conn, "enrollment refused: wrong cluster token")
    reason = admit(ask.name)
    if reason:
        raise await _refuse(conn, reason)
    try:
        cert, ca = sign(ask.name, ask.csr)
    except ValueError as e:
        raise await _refuse(conn, f"enrollment refused: {e}") from None
    proof = enroll_master_proof(key, ask.nonce, nonce, cert, ca)
    await conn.send(Enrolled(cert=cert, ca=ca, proof=proof))
    return ask.name


async def enroll(
    conn: Connection,
    token: str,
    name: str,
    csr: bytes,
    timeout: float = HANDSHAKE_TIMEOUT,
    version: int = PROTOCOL_VERSION,
) -> Enrolled:
    """Worker side: trade the token and a CSR for a certificate and the CA's.

    The reply is believed only if its proof shows the master holds the token.
    """
    key = token.encode()
    until = asyncio.get_running_loop().time() + timeout
    conn.limit = MAX_HANDSHAKE_FRAME
    ask = Enroll(version=version, name=name, nonce=auth.new_nonce(), csr=csr)
    await conn.send(ask)
    msg = await _recv(conn, until)
    if isinstance(msg, Refused):
        raise auth.AuthError(f"master refused: {msg.reason}")
    if not isinstance(msg, Challenge):
        raise await _refuse(conn, f"expected Challenge, got {type(msg).__name__}")
    if msg.version != version:
        raise await _refuse(conn, version_mismatch(msg.version, version))
    await conn.send(Auth(proof=enroll_worker_proof(key, ask, msg.nonce)))
    done = await _recv(conn, until)
    if isinstance(done, Refused):
        raise auth.AuthError(f"master refused: {done.reason}")
    if not isinstance(done, Enrolled):
        raise await _refuse(conn, f"expected Enrolled, got {type(done).__name__}")
    want = enroll_master_proof(key, ask.nonce, msg.nonce, done.cert, done.ca)
    if not auth.check(want, done.proof):
        raise auth.AuthError("master failed authentication: wrong cluster token")
    return done


async def accept_channel(
    conn: Connection,
    certified: str,
    heartbeat: float,
    admit: Callable[[str], str | None],
    timeout: float = HANDSHAKE_TIMEOUT,
    version: int = PROTOCOL_VERSION,
    history: tuple[int, float] = (500, 7 * 86400.0),
    term: int = 0,
    standby: Callable[[], tuple[str, str]] | None = None,
    beat_window: float = 0.0,
) -> str:
    """Master side, on a connection whose client certificate names ``certified``.

    ``standby`` says why this master takes no workers now and where the
    leader is (``("", "")`` while it leads): the worker is refused with the
    leader's address.  ``term`` and ``beat_window`` go to the worker in the Welcome.
    """
    until = asyncio.get_running_loop().time() + timeout
    conn.limit = MAX_HANDSHAKE_FRAME
    hello = await _recv(conn, until)
    if not isinstance(hello, Hello):
        raise await _refuse(conn, f"expected Hello, got {type(hello).__name__}")
    if hello.version != version:
        raise await _refuse(conn, version_mismatch(version, hello.version))
    if hello.name != certified:
        why = f"certificate is for node {certified!r}, not {hello.name!r}"
        raise await _refuse(conn, why)
    if standby is not None:
        why, leader = standby()
        if why:
            with contextlib.suppress(ConnectionClosed, FrameError):
                await conn.send(Refused(reason=why, leader=leader))
            raise auth.Redirect(why, leader)
    reason = admit(hello.name)
    if reason:
        raise await _refuse(conn, reason)
    await conn.send(welcome(heartbeat, history, term, beat_window))
    conn.limit = MAX_FRAME
    return hello.name


def welcome(
    heartbeat: float, history: tuple[int, float], term: int = 0, beat_window: float = 0.0
) -> Welcome:
    """The master's Welcome, its clock read now."""
    keep, keep_for = history
    return Welcome(
        heartbeat=heartbeat,
        now=time.time(),
        keep_ended=keep,
        keep_ended_for=keep_for,
        term=term,
        beat_window=beat_window,
    )


async def connect_channel(
    conn: Connection,
    name: str,
    timeout: float = HANDSHAKE_TIMEOUT,
    version: int = PROTOCOL_VERSION,
) -> Welcome:
    """Worker side, over TLS with its certificate: say who it is, learn the heartbeat."""
    until = asyncio.get_running_loop().time() + timeout
    conn.limit = MAX_HANDSHAKE_FRAME
    await conn.send(Hello(version=version, name=name, nonce=b""))
    msg = await _recv(conn, until)
    if isinstance(msg, Refused) and msg.leader:
        raise auth.Redirect(msg.reason, msg.leader)
    if isinstance(msg, Refused):
        raise auth.AuthError(f"master refused: {msg.reason}")
    if not isinstance(msg, Welcome):
        raise await _refuse(conn, f"expected Welcome, got {type(msg).__name__}")
    conn.limit = MAX_FRAME
    return msg
