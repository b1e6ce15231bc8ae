"""Both ends of the handshake, over a `Connection`.

Neither side acts on anything before it completes; every failure sends the
peer a `Refused` with the reason and raises `AuthError` with the same words.
Until it completes a peer may send frames of at most `MAX_HANDSHAKE_FRAME`
bytes, and the whole exchange must be over within `HANDSHAKE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def accept(
    conn: Connection,
    token: str,
    heartbeat: float,
    admit: Callable[[str], str | None],
    timeout: float = HANDSHAKE_TIMEOUT,
    version: int = PROTOCOL_VERSION,
    history: tuple[int, float] = (500, 7 * 86400.0),
) -> str:
    """Master side: authenticate a worker; return the name it registers under.

    ``admit(name)`` returns a reason to refuse the name, or None.
    ``history``: the ended processes a worker keeps (count, seconds).
    """
    key = token.encode()
    until = asyncio.get_running_loop().time() + timeout
    conn.limit = MAX_HANDSHAKE_FRAME
    hello = await _recv(conn, until)
    if not isinstance(hello, Hello):
        raise await _refuse(conn, f"expected Hello, got {type(hello).__name__}")
    if hello.version != version:
        raise await _refuse(conn, version_mismatch(version, hello.version))
    nonce = auth.new_nonce()
    await conn.send(
        Challenge(version=version, nonce=nonce, proof=auth.master_proof(key, hello.nonce, nonce))
    )
    answer = await _recv(conn, until)
    if isinstance(answer, Refused):
        raise auth.AuthError(f"worker refused: {answer.reason}")
    if not isinstance(answer, Auth):
        raise await _refuse(conn, f"expected Auth, got {type(answer).__name__}")
    if not auth.check(auth.worker_proof(key, hello.nonce, nonce), answer.proof):
        raise await _refuse(conn, "authentication failed: wrong cluster token")
    reason = admit(hello.name)
    if reason:
        raise await _refuse(conn, reason)
    keep, keep_for = history
    await conn.send(
        Welcome(heartbeat=heartbeat, now=time.time(), keep_ended=keep, keep_ended_for=keep_for)
    )
    conn.limit = MAX_FRAME
    return hello.name


async def connect(
    conn: Connection,
    token: str,
    name: str,
    timeout: float = HANDSHAKE_TIMEOUT,
    version: int = PROTOCOL_VERSION,
) -> Welcome:
    """Worker side: authenticate to the master and learn the heartbeat interval."""
    key = token.encode()
    until = asyncio.get_running_loop().time() + timeout
    conn.limit = MAX_HANDSHAKE_FRAME
    nonce = auth.new_nonce()
    await conn.send(Hello(version=version, name=name, nonce=nonce))
    msg = await _recv(conn, until)
    if isinstance(msg, Refused):
        raise auth.AuthError(f"master refused: {msg.reason}")
    if not isinstance(msg, Challenge):
        raise await _refuse(conn, f"expected Challenge, got {type(msg).__name__}")
    if msg.version != version:
        raise await _refuse(conn, version_mismatch(msg.version, version))
    if not auth.check(auth.master_proof(key, nonce, msg.nonce), msg.proof):
        raise await _refuse(conn, "master failed authentication: wrong cluster token")
    await conn.send(Auth(proof=auth.worker_proof(key, nonce, msg.nonce)))
    msg = await _recv(conn, until)
    if isinstance(msg, Refused):
        raise auth.AuthError(f"master refused: {msg.reason}")
    if not isinstance(msg, Welcome):
        raise await _refuse(conn, f"expected Welcome, got {type(msg).__name__}")
    conn.limit = MAX_FRAME
    return msg
