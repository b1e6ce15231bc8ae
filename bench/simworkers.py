"""Simulated workers: real protocol clients with no supervisor behind them.

Used by the tests (bad peers, liveness) and by the heartbeat-capacity
benchmark, which runs thousands of them in a separate process.  They speak
TLS as real workers do: the first `connect` of a name enrolls with the token
(its certificate is kept in `CertStore`, for every later connect of that name
in this process), then dials with the certificate.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from corral.master.server import MAX_UNAUTHENTICATED, MAX_UNAUTHENTICATED_PER_HOST
from corral.transport import beats, handshake, keys, streams, tls
from corral.transport.connection import Connection, ConnectionClosed
from corral.transport.messages import (
    Error,
    Heartbeat,
    Metrics,
    NodeFacts,
    Register,
    Welcome,
)

BOOT = uuid.uuid4().hex


def facts(name: str) -> NodeFacts:
    return NodeFacts(
        name=name, hostname=socket.gethostname(), cpus=2, mem_total=1 << 34, boot_id=BOOT
    )


class CertStore:
    """Certificates of simulated workers, one directory per (master, name), one shared key.

    One key for all: a simulated node's key stays in this process anyway,
    and thousands of them need no thousands of key generations.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="corral-sim-"))
        self.key = keys.new_key()
        self.contexts: dict[tuple[str, int, str], ssl.SSLContext] = {}

    def files(self, host: str, port: int, name: str) -> tls.NodeFiles:
        safe = "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in name)
        return tls.NodeFiles(self.dir / f"{host}-{port}" / safe)

    async def context(
        self, host: str, port: int, token: str, name: str, **where: Any
    ) -> ssl.SSLContext:
        """The TLS context for ``name`` at that master: enroll first if it has none.

        ``where``: more for `streams.open_connection` (``local_addr``).
        """
        ctx = self.contexts.get((host, port, name))
        if ctx is not None:
            return ctx
        files = self.files(host, port, name)
        reader, writer = await streams.open_connection(
            host, port, ssl=tls.enroll_context(), **where
        )
        conn = Connection(reader, writer)
        try:
            done = await handshake.enroll(conn, token, name, keys.csr_der(self.key, name))
        finally:
            await conn.close()
        files.dir.mkdir(parents=True, exist_ok=True)
        tls.write_private(files.key, keys.key_pem(self.key))
        files.store(done.cert, done.ca)
        ctx = self.contexts[host, port, name] = files.context()
        return ctx

    def forget(self, host: str, port: int, name: str) -> None:
        self.contexts.pop((host, port, name), None)


CERTS: CertStore | None = None


def certs() -> CertStore:
    global CERTS
    if CERTS is None:
        CERTS = CertStore()
    return CERTS


async def dial(
    host: str, port: int, token: str, name: str, plain: bool = False, source: str | None = None
) -> tuple[Connection, Welcome]:
    """A channel to the master as node ``name``: TLS with its certificate, then the hello.

    ``plain``: no TLS, for a master of `bench.plainchannel` (a benchmark's reference).
    ``source``: the local address to dial from (a loopback address of its own).
    """
    where: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
    if plain:
        reader, writer = await streams.open_connection(host, port, **where)
    else:
        ctx = await certs().context(host, port, token, name, **where)
        reader, writer = await streams.open_connection(
            host, port, ssl=ctx, server_hostname=host, **where
        )
    conn = Connection(reader, writer)
    try:
        return conn, await handshake.connect_channel(conn, name)
    except BaseException:
        conn.abort()
        raise


class SimWorker:
    """Connects, authenticates, registers, then beats until stopped or paused."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        name: str,
        plain: bool = False,
        source: str | None = None,
    ) -> None:
        self.host, self.port, self.token, self.name = host, port, token, name
        self.plain = plain
        self.source = source  # the local address it dials from (None: the kernel's choice)
        self.conn: Connection | None = None
        self.welcome: Welcome | None = None
        self.beating = True
        self.seq = 0
        self.skew: float | None = None  # our loop's clock less the master's (its Welcome)
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> Welcome:
        self.conn, self.welcome = await dial(
            self.host, self.port, self.token, self.name, self.plain, self.source
        )
        now = self.welcome.now
        self.skew = asyncio.get_running_loop().time() - now if now > 0 else None
        await self.conn.send(Register(facts=facts(self.name)))
        return self.welcome

    def start_beating(self, interval: float | None = None) -> None:
        assert self.welcome is not None
        self._task = asyncio.create_task(self._beat(interval or self.welcome.heartbeat))

    async def _beat(self, interval: float) -> None:
        assert self.conn is not None
        assert self.welcome is not None
        loop = asyncio.get_running_loop()
        window = min(self.welcome.beat_window, interval)
        if self.skew is not None and window > 0:  # as a worker beats: on the master's grid
            at = beats.offset(self.name, window)
            next_at = beats.next_beat(loop.time(), self.skew, interval, at)
        else:  # spread over one interval so thousands don't beat in lockstep
            next_at = loop.time() + interval * (zlib.crc32(self.name.encode()) % 1000) / 1000
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        reader = asyncio.create_task(self._answer())
        try:
            while True:
                if self.beating:
                    self.seq += 1
                    try:
                        self.conn.send_nowait(
                            Heartbeat(seq=self.seq, metrics=Metrics(cpu_percent=1.0))
                        )
                    except ConnectionClosed:
                        return  # the master dropped us (a lost node): stop, as asked
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        finally:
            reader.cancel()

    async def _answer(self) -> None:
        """Reply to any request with an error: there is nothing behind this worker."""
        assert self.conn is not None
        while True:
            msg: Any = await self.conn.recv()
            if hasattr(msg, "id"):
                await self.conn.send(Error(id=msg.id, message="simulated worker"))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()


async def connect_all(workers: list[SimWorker], patient: bool = False) -> int:
    """Connect and start each of ``workers``, as real workers would; how many made it.

    A refused dial is tried again after a real worker's backoff (jittered,
    doubling from 0.1 s, capped at one beat).  ``patient``: the first dial
    too waits a worker's first backoff.  At most as many dials are under way
    at once as the master lets handshakes run from their addresses (from
    distinct addresses, its global limit): more would only be refused, and
    this process shares the machine's cores with the master it measures.
    """
    sources = {w.source for w in workers}
    sem = asyncio.Semaphore(
        MAX_UNAUTHENTICATED if len(sources) > 1 else MAX_UNAUTHENTICATED_PER_HOST
    )

    async def up(w: SimWorker) -> bool:
        if patient:
            await asyncio.sleep(0.1 * random.uniform(0.5, 1.0))
        for attempt in range(200):
            async with sem:
                try:
                    await w.connect()
                except Exception:
                    w.conn = None
                else:
                    w.start_beating()
                    return True
            await asyncio.sleep(min(1.0, 0.1 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1))
        return False

    return sum(await asyncio.gather(*(up(w) for w in workers)))


def loopback(i: int) -> str:
    """A loopback address of its own for simulated node ``i``: 2,000 nodes are 2,000 hosts."""
    return f"127.42.{i // 250}.{i % 250 + 1}"


async def run_many(
    host: str,
    port: int,
    token: str,
    count: int,
    seconds: float,
    plain: bool = False,
    storm: bool = False,
) -> int:
    """Connect ``count`` workers, beat for ``seconds``; return how many connected.

    ``storm``: once all are connected, wait for a line on stdin, then drop
    every connection at once and reconnect them all (printing
    ``reconnected N in S s``), and beat on.
    """
    workers = [
        SimWorker(host, port, token, f"sim{i:05d}", plain, loopback(i)) for i in range(count)
    ]
    ok = await connect_all(workers)
    print(f"connected {ok}", flush=True)
    if storm:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t0 = time.monotonic()
        for w in workers:
            if w._task is not None:
                w._task.cancel()
            if w.conn is not None:
                w.conn.abort()
        workers = [SimWorker(host, port, token, w.name, plain, w.source) for w in workers]
        ok = await connect_all(workers, patient=True)
        print(f"reconnected {ok} in {time.monotonic() - t0:.2f} s", flush=True)
    await asyncio.sleep(seconds)
    await asyncio.gather(*(w.close() for w in workers))
    return ok


def main() -> None:
    """``python -m bench.simworkers HOST PORT COUNT SECONDS [--plain] [--storm]``."""
    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    flags = sys.argv[5:]
    token = os.environ["CORRAL_TOKEN"]
    from corral.transport.loop import run  # uvloop's, as real workers run on

    run(run_many(host, port, token, count, seconds, "--plain" in flags, "--storm" in flags))


if __name__ == "__main__":
    main()
