"""Reconnect storm: 2,000 enrolled workers lose their connections at once and come back.

Figure: from the moment every connection is dropped to the master counting
every node back (a ``node.back`` event for each), over mutual TLS: each
comes back with a full TLS handshake and its certificate, no token.  The
simulated workers dial as real ones do (jittered backoff, at most a few
handshakes at once from their one address, as the master allows).
Reference: how long the same workers took to enroll and connect the first time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster import LocalCluster, wait_until
from bench.report import line

WORKERS = 2000


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
                wait_until(lambda: len(cluster.nodes()) >= WORKERS, 60, f"{WORKERS} nodes")
                t1 = time.monotonic()
                sim.stdin.write("storm\n")
                sim.stdin.flush()

                def back() -> int:
                    events = cluster.call("GET", "/v1/events?limit=10000")["events"]
                    return sum(1 for e in events if e["kind"] == "node.back") >= WORKERS

                wait_until(back, 60, f"{WORKERS} nodes back")
                took = time.monotonic() - t1
                said = sim.stdout.readline().strip()  # "reconnected N in S s"
                alive = sum(1 for n in cluster.nodes().values() if n["state"] == "alive")
            finally:
                sim.terminate()
                sim.wait(30)
        finally:
            cluster.stop()
    return [
        line(
            f"reconnect storm ({WORKERS} workers dropped at once, over mutual TLS)",
            f"all back in {took:.1f} s ({alive} alive; workers: {said})",
            f"first enrollment and connect of all: {joined:.1f} s ({first})",
            "all alive again within 10 s",
            took <= 10 and alive == WORKERS,
        )
    ]
