"""A master and a worker whose channel has no TLS: the benchmarks' reference, nothing else.

corral has no plaintext mode.  To show what TLS costs, the benchmarks run
the same master and worker code with TLS patched out, here, in the bench
process tree only:

    python -m bench.plainchannel master --headless ...   (corral master's flags)
    python -m bench.plainchannel worker --master ...     (corral worker's flags)

The master accepts plain TCP and takes the name in a worker's Hello on its
word (no enrollment, no certificate, no token); the worker dials plain TCP
and says hello.  Everything after the hello is the real code.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from corral.transport import handshake, streams, tls
from corral.transport.connection import Connection
from corral.transport.messages import MAX_FRAME, MAX_HANDSHAKE_FRAME, Hello


async def _accept_named(
    conn: Connection,
    certified: str,
    heartbeat: float,
    admit: Callable[[str], str | None],
    timeout: float = handshake.HANDSHAKE_TIMEOUT,
    version: int = 0,
    history: tuple[int, float] = (500, 7 * 86400.0),
    term: int = 0,
    standby: Callable[[], tuple[str, str]] | None = None,
    beat_window: float = 0.0,
) -> str:
    """`handshake.accept_channel` with the hello's name believed (no certificate to match).

    A lone master is never a standby: ``standby`` is taken for the signature's
    sake; ``term`` goes into the Welcome as the real one sends it.
    """
    conn.limit = MAX_HANDSHAKE_FRAME
    hello = await asyncio.wait_for(conn.recv(), timeout)
    assert isinstance(hello, Hello), hello
    await conn.send(handshake.welcome(heartbeat, history, term, beat_window))
    conn.limit = MAX_FRAME
    return hello.name


def patch_master() -> None:
    from corral.master import ca, server

    start = server.start_server

    async def plain_start(*args: Any, **kw: Any) -> Any:
        kw.pop("ssl", None)
        kw.pop("ssl_handshake_timeout", None)
        kw.pop("gate", None)
        return await start(*args, **kw)

    server.start_server = plain_start  # type: ignore[assignment]
    tls.peer_of = lambda ssl_object: tls.Peer("", 0, "")  # as if certified...
    ca.CA.allowed = lambda self, name, serial: None  # type: ignore[method-assign]
    handshake.accept_channel = _accept_named  # ...under the name it says hello with


def patch_worker() -> None:
    from corral.daemon import worker

    async def plain_dial(self: worker.Worker, ctx: object) -> Connection:
        cfg = self.config
        reader, writer = await asyncio.wait_for(
            streams.open_connection(cfg.host, cfg.port), worker.dial_timeout(self._heartbeat)
        )
        return Connection(reader, writer)

    worker.Worker._dial = plain_dial  # type: ignore[method-assign,assignment]
    tls.NodeFiles.enrolled_as = lambda self: self.dir.parent.name  # type: ignore[method-assign]
    tls.NodeFiles.usable_for = lambda self, name, now: True  # type: ignore[method-assign]
    tls.NodeFiles.context = lambda self: None  # type: ignore[method-assign,assignment,return-value]


def main(argv: list[str]) -> int:
    from corral.__main__ import main as corral

    if argv[:1] == ["master"]:
        patch_master()
    elif argv[:1] == ["worker"]:
        patch_worker()
    else:
        print("usage: python -m bench.plainchannel master|worker ...", file=sys.stderr)
        return 2
    return corral(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
