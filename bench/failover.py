"""Failover and submit throughput of masters on etcd (issue 14).

Failover: a real etcd, two masters (``--etcd``, default lease 5 s,
heartbeat 1 s) and one worker listing both.  Each of 5 rounds kills the
leader with SIGKILL and times, from the kill, the first ``POST /v1/launch``
that the surviving master accepts (a process started on the worker, asked
every 20 ms).  The killed master is started again and joins as a standby
before the next round.  Figure: the median, beside the lease TTL (goal:
within TTL + 1 s) and client-go's default lease of 15 s as the reference.

Submit throughput: ``submit`` calls on an in-process `Master` whose
tickets live in etcd (the leader, guarded by its term), against the same on
a master with the SQLite store, in the same run (goal: at least 0.5x).
The figure is the rate at saturation: 64 clients at once, 4,800 submits,
median of 3 rounds, each on a fresh store.  Beside it, 16 clients and one
client, each submit awaited before the next: there the rate is bound by
the latency of one etcd transaction (a round trip and etcd's fsync), where
SQLite in WAL mode with synchronous=NORMAL does not fsync a commit.
Submits that wait together share one transaction, so more clients make
larger transactions.  No worker is connected, so every job waits in the
queue: the figure is the ticket store's, not placement's.  Beside them,
for reference, the 64 clients on an etcd whose data is on tmpfs
(/dev/shm), where etcd's fsync costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.cluster import wait_until
from bench.ha import Etcd, HaCluster, etcd_binary
from bench.report import line, median
from corral.transport.loop import run as run_loop  # the master's loop: uvloop's

ROUNDS = 5
LEASE = 5.0
CLIENT_GO_LEASE = 15.0
SUBMITS = 4800
CLIENTS = 64  # the figure's: enough at once to saturate the store
FEWER = 16  # shown beside it
THROUGHPUT_ROUNDS = 3


def _launch(api: str, token: str) -> bool:
    body = json.dumps({"argv": ["sleep", "60"], "nodes": ["n1"]}).encode()
    req = urllib.request.Request(f"http://{api}/v1/launch", data=body, method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return bool(json.loads(r.read()).get("procs"))
    except (OSError, ValueError):
        return False


def failover(base: Path) -> list[float]:
    etcd = Etcd(base)
    etcd.start()
    ha = HaCluster(base, etcd, heartbeat=1.0, lease=LEASE)
    times = []
    try:
        ha.start_ha_master("a")
        ha.start_ha_master("b")
        ha.start_worker("n1")
        for _ in range(ROUNDS):
            leader = wait_until(ha.leader, 30, "a leader")
            other = next(n for n in ha.masters if n != leader)
            wait_until(lambda o=other: ha.masters_view(o).get(o, {}).get("role") == "standby", 30)
            api = ha.masters[other].api
            t0 = time.monotonic()
            ha.kill_master(leader, signal.SIGKILL)
            wait_until(lambda a=api: _launch(a, ha.token), 60, "a launch at the new leader")
            times.append(time.monotonic() - t0)
            ha.start_ha_master(leader)  # back, as a standby
        return times
    finally:
        ha.stop()
        etcd.stop()


async def _submits(base: Path, etcd_url: str | None, clients: int, submits: int) -> float:
    from corral.master.api import start_api
    from corral.master.control import Master, MasterConfig
    from corral.master.deployer import Deployer

    cfg = MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=base)
    if etcd_url:
        cfg.etcd, cfg.name = [etcd_url], f"bench-{base.name}"
    master = Master(cfg)
    await master.start()
    api = await start_api(master, Deployer(master))
    try:
        deadline = time.monotonic() + 30
        while not master.acting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bench's master never led: {master.standby_reason()}")
            await asyncio.sleep(0.01)

        async def client(c: int) -> None:
            for i in range(submits // clients):
                await master.jobs.submit(["sleep", "1"], name=f"c{c}j{i}")

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), 120)
        return submits // clients * clients / (time.perf_counter() - t0)
    finally:
        await api.stop()
        await master.stop()


def run() -> Iterator[str]:
    if etcd_binary() is None:
        yield "[SKIP] failover: etcd is not installed (apt-get install etcd-server)"
        return
    with tempfile.TemporaryDirectory(prefix="corral-failover-") as tmp:
        base = Path(tmp)
        times = failover(base / "ha")
        got = median(times)
        each = ", ".join(f"{t:.2f}" for t in times)
        yield line(
            "failover: kill -9 of the leader to the first launch at the new one (median of 5)",
            f"{got:.2f} s ({each})",
            f"lease TTL {LEASE:g} s; client-go's default lease {CLIENT_GO_LEASE:g} s",
            f"<= TTL + 1 s = {LEASE + 1:g} s",
            got <= LEASE + 1,
        )
        rates: dict[tuple[str, int], float] = {}
        for clients in (CLIENTS, FEWER, 1):
            submits = SUBMITS if clients > 1 else SUBMITS // 5  # one client: a round trip each
            for kind in ("etcd", "sqlite"):
                rates[kind, clients] = median(
                    [
                        _rate(base / f"{kind}-{clients}-{r}", kind == "etcd", clients, submits)
                        for r in range(THROUGHPUT_ROUNDS)
                    ]
                )
        # The same etcd with its data on tmpfs, where an fsync costs nothing: what
        # of a submit is etcd's disk flush, and what is the master's own work.
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            with tempfile.TemporaryDirectory(prefix="corral-etcd-", dir=shm) as ram:
                rates["tmpfs", CLIENTS] = _rate(base / "tmpfs", True, CLIENTS, SUBMITS, Path(ram))

        def beside(clients: int) -> str:
            e, q = rates["etcd", clients], rates["sqlite", clients]
            return f"{e:.0f}/s against {q:.0f}/s ({e / q:.2f}x)"

        on_etcd, on_sqlite = rates["etcd", CLIENTS], rates["sqlite", CLIENTS]
        tmpfs = rates.get(("tmpfs", CLIENTS))
        on_tmpfs = f"; etcd on tmpfs (no disk flush) {tmpfs:.0f}/s" if tmpfs else ""
        yield line(
            f"submit throughput, tickets in etcd ({SUBMITS} jobs from {CLIENTS} clients,"
            f" median of {THROUGHPUT_ROUNDS})",
            f"{on_etcd:.0f}/s ({on_etcd / on_sqlite:.2f}x); {FEWER} clients {beside(FEWER)};"
            f" one client {beside(1)}",
            f"SQLite store {on_sqlite:.0f}/s{on_tmpfs}",
            ">= 0.5x",
            on_etcd >= 0.5 * on_sqlite,
        )


def _rate(
    where: Path, on_etcd: bool, clients: int, submits: int, data: Path | None = None
) -> float:
    """Submits a second on a fresh store: SQLite, or a fresh etcd (its data in ``data``)."""
    where.mkdir(parents=True)
    if not on_etcd:
        return run_loop(_submits(where, None, clients, submits))
    etcd = Etcd(data or where)
    etcd.start()
    try:
        return run_loop(_submits(where, etcd.url, clients, submits))
    finally:
        etcd.stop()
