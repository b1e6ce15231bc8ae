"""The worker daemon idle at 1 Hz: CPU share and RSS.

Reference: an idle `python3 -c` interpreter started the same way, the
floor any Python daemon pays.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.cluster import LocalCluster
from bench.heartbeat import cpu_share
from bench.report import line

WINDOW = 20.0


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp), heartbeat=1.0)
        cluster.start_master()
        floor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            worker = psutil.Process(cluster.start_worker("idle").pid)
            cluster.launch("idle", ["sleep", "120"])  # a supervised program to sample each beat
            time.sleep(2.0)  # past start-up work
            share = cpu_share(worker, WINDOW)
            rss = worker.memory_info().rss
            floor_rss = psutil.Process(floor.pid).memory_info().rss
        finally:
            floor.kill()
            floor.wait()
            cluster.stop()
    mib = 2**20
    return [
        line(
            "worker idle at 1 Hz (1 supervised program)",
            f"CPU {share * 100:.2f}% of a core, RSS {rss / mib:.1f} MiB",
            f"bare python3 RSS {floor_rss / mib:.1f} MiB",
            "CPU <= 0.5%, RSS <= 40 MiB",
            share <= 0.005 and rss <= 40 * mib,
        )
    ]
