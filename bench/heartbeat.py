"""Heartbeat capacity: one master, 2,000 simulated workers at 1 Hz from another process.

Figure: the master's CPU (share of one core) while they beat, and how many
nodes it ever marked suspect.  Reference: the same master idle, no workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.cluster import LocalCluster, wait_until
from bench.report import line

WORKERS = 2000
WINDOW = 10.0


def cpu_share(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return used / seconds


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp), heartbeat=1.0)
        cluster.start_master()
        try:
            assert cluster.master is not None
            master = psutil.Process(cluster.master.pid)
            idle = cpu_share(master, 3.0)
            host, port = cluster.listen.rsplit(":", 1)
            sim = subprocess.Popen(
                [sys.executable, "-m", "bench.simworkers", host, port, str(WORKERS), "40"],
                env=dict(os.environ, CORRAL_TOKEN=cluster.token),
                stdout=subprocess.PIPE,
            )
            try:
                wait_until(lambda: len(cluster.nodes()) >= WORKERS, 60, f"{WORKERS} nodes")
                time.sleep(3.0)  # let the first-beat spread settle into steady state
                busy = cpu_share(master, WINDOW)
                nodes = cluster.nodes().values()
                alive = sum(1 for n in nodes if n["state"] == "alive")
                events = cluster.call("GET", "/v1/events?limit=10000")["events"]
                suspect = sum(1 for e in events if e["kind"] in ("node.suspect", "node.lost"))
            finally:
                sim.terminate()
                sim.wait(30)
        finally:
            cluster.stop()
    return [
        line(
            f"heartbeat capacity ({WORKERS} workers at 1 Hz)",
            f"master CPU {busy * 100:.1f}% of a core, {alive} alive, {suspect} suspect/lost",
            f"idle master {idle * 100:.1f}%",
            "<= 30% of a core, 0 false suspect",
            busy <= 0.30 and suspect == 0,
        )
    ]
