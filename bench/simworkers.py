"""Simulated workers: real protocol clients with no supervisor behind them.

Used by the tests (bad peers, liveness) and by the heartbeat-capacity
benchmark, which runs thousands of them in a separate process.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from typing import Any

from corral.master.server import MAX_UNAUTHENTICATED_PER_HOST
from corral.transport import handshake
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


class SimWorker:
    """Connects, authenticates, registers, then beats until stopped or paused."""

    def __init__(self, host: str, port: int, token: str, name: str) -> None:
        self.host, self.port, self.token, self.name = host, port, token, name
        self.conn: Connection | None = None
        self.welcome: Welcome | None = None
        self.beating = True
        self.seq = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> Welcome:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.conn = Connection(reader, writer)
        self.welcome = await handshake.connect(self.conn, self.token, self.name)
        await self.conn.send(Register(facts=facts(self.name)))
        return self.welcome

    def start_beating(self, interval: float | None = None) -> None:
        assert self.welcome is not None
        self._task = asyncio.create_task(self._beat(interval or self.welcome.heartbeat))

    async def _beat(self, interval: float) -> None:
        assert self.conn is not None
        # Spread the first beat over one interval so thousands don't beat in lockstep.
        await asyncio.sleep(interval * (hash(self.name) % 1000) / 1000)
        next_at = time.monotonic()
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
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
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


async def run_many(host: str, port: int, token: str, count: int, seconds: float) -> int:
    """Connect ``count`` workers, beat for ``seconds``; return how many connected."""
    workers = [SimWorker(host, port, token, f"sim{i:05d}") for i in range(count)]
    sem = asyncio.Semaphore(MAX_UNAUTHENTICATED_PER_HOST)

    async def up(w: SimWorker) -> bool:
        # As real workers do: a refused dial (the master admits a few
        # handshakes per address at once) is tried again after a pause.
        for attempt in range(50):
            async with sem:
                try:
                    await w.connect()
                except Exception:
                    if w.conn is not None:
                        await w.conn.close()
                    await asyncio.sleep(0.05 * random.uniform(1, 2) * min(attempt + 1, 10))
                    continue
            w.start_beating()
            return True
        return False

    ok = sum(await asyncio.gather(*(up(w) for w in workers)))
    print(f"connected {ok}", flush=True)
    await asyncio.sleep(seconds)
    await asyncio.gather(*(w.close() for w in workers))
    return ok


def main() -> None:
    import sys

    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    token = os.environ["CORRAL_TOKEN"]
    asyncio.run(run_many(host, port, token, count, seconds))


if __name__ == "__main__":
    main()
