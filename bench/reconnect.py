"""Reconnect storm: 2,000 enrolled workers lose their connections at once and come back.

Figure: from the moment every connection is dropped to the master counting
every node back (a ``node.back`` event for each), over mutual TLS: each
comes back with a full TLS handshake and its certificate, no token.  The
simulated workers dial as real ones do (jittered backoff, and no more
handshakes at once than the master allows).
Reference: how long the same workers took to enroll and connect the first time.

The simulated workers come from 2,000 loopback addresses (127.42.x.y), as
2,000 machines would: the master's limit of 8 handshakes at once from one
address is for a flood from one host, and from one address it alone would
queue the whole storm.  The figure also gives the master's and the
simulator's CPU over the storm: they share this machine's cores.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.cluster import LocalCluster, wait_until
from bench.report import line

WORKERS = 2000


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp), heartbeat=1.0)
        cluster.start_master()
        try:
            host, port = cluster.listen.rsplit(":", 1)
            t0 = time.monotonic()
            argv = [sys.executable, "-m", "bench.simworkers", host, port, str(WORKERS), "15"]
            sim = subprocess.Popen(
                [*argv, "--storm"],
                env=dict(os.environ, CORRAL_TOKEN=cluster.token),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert sim.stdin is not None and sim.stdout is not None
            try:
                first = sim.stdout.readline().strip()  # "connected N"
                joined = time.monotonic() - t0
                wait_until(lambda: len(cluster.nodes()) >= WORKERS, 300, f"{WORKERS} nodes", 1.0)
                assert cluster.master is not None
                procs = [psutil.Process(cluster.master.pid), psutil.Process(sim.pid)]
                cpu0 = [cpu(proc) for proc in procs]
                t1 = time.monotonic()
                sim.stdin.write("storm\n")
                sim.stdin.flush()
                # The workers say when every one of them is through its handshake and
                # has registered; the master, asked then (and not while they come
                # back: listing 2,000 nodes costs it milliseconds), must count them
                # all alive, each with a node.back event.
                ready, _, _ = select.select([sim.stdout], [], [], 120)
                said = sim.stdout.readline().strip() if ready else "no word"  # "reconnected ..."

                def back() -> bool:
                    events = cluster.call("GET", "/v1/events?limit=10000")["events"]
                    return sum(1 for e in events if e["kind"] == "node.back") >= WORKERS

                wait_until(back, 60, f"{WORKERS} nodes back", 0.05)
                took = time.monotonic() - t1
                master_cpu, sim_cpu = (cpu(proc) - c for proc, c in zip(procs, cpu0, strict=True))
                alive = sum(1 for n in cluster.nodes().values() if n["state"] == "alive")
            finally:
                sim.terminate()
                sim.wait(30)
        finally:
            cluster.stop()
    return [
        line(
            f"reconnect storm ({WORKERS} workers dropped at once, over mutual TLS)",
            f"all back in {took:.1f} s ({alive} alive; workers: {said};"
            f" CPU meanwhile: master {master_cpu:.1f} s, simulated workers {sim_cpu:.1f} s)",
            f"first enrollment and connect of all: {joined:.1f} s ({first})",
            "all alive again within 10 s",
            took <= 10 and alive == WORKERS,
        )
    ]
