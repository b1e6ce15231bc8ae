"""A bundle goes to `SENDS_AT_ONCE` nodes at a time, the others waiting their turn.

A real master, three real workers and a private sshd: a job of three
replicas spread over the three nodes sends the bundle three times, and
the replicas' tickets, read as fast as the API answers, never show bytes
flowing to more than two nodes at once, while the third says it waits.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import LocalCluster
from corral.master.bundles import SENDS_AT_ONCE, WAITING_TURN
from corral.master.job_report import ticket_lines
from tests.cli.conftest import wait_for
from tests.deploy.sshd import Sshd

pytestmark = pytest.mark.timeout(120)

NODES = ("t1", "t2", "t3")
MiB = 1 << 20


@pytest.fixture
def cluster(tmp_path: Path, sshd: Sshd) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", heartbeat=1.0)
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text(f'[ssh]\nuser = "{sshd.user}"\nkey = "{sshd.key}"\n')
    shutil.copy(sshd.known_hosts, c.state / "known_hosts")
    try:
        c.start_master()
        for name in NODES:
            c.start_worker(name, extra_args=["--ssh-port", str(sshd.port), "--mem", "1G"])
        yield c
    finally:
        c.stop()


def data_bundle(path: Path, size: int) -> Path:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("data.bin")
        info.size = size
        tf.addfile(info, io.BytesIO(os.urandom(size)))
    return path


def test_a_bundle_is_sent_to_two_nodes_at_a_time_and_the_third_waits(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    assert SENDS_AT_ONCE == 2 and len(NODES) == SENDS_AT_ONCE + 1
    bundle = data_bundle(tmp_path / "data.tar", 48 * MiB)
    body = {
        "argv": ["true"], "replicas": 3, "spread": True, "mem": 10 * MiB,
        "app": "turns", "bundle": str(bundle),
    }  # fmt: skip
    job = cluster.call("POST", "/v1/jobs", body, timeout=60)["id"]

    most_at_once = 0
    waited: set[str] = set()
    shown: list[str] = []
    while True:
        t: dict[str, Any] = cluster.call("GET", f"/v1/jobs/{job}")
        sending = [r["steps"][0] for r in t["replicas"] if r.get("steps")]
        flowing = [s for s in sending if 0 < s["done"] < s["total"]]
        most_at_once = max(most_at_once, len(flowing))
        for r in t["replicas"]:
            steps = r.get("steps") or []
            if steps and steps[0].get("ended_at") is None and steps[0]["note"] == WAITING_TURN:
                waited.add(r["node"])
                if not shown:
                    shown = ticket_lines(t)
        if t["state"] not in ("queued", "running"):
            break

    assert t["state"] == "succeeded", t
    sent = {r["node"]: r["steps"][0]["sent"] for r in t["replicas"]}
    assert sent == {n: bundle.stat().st_size for n in NODES}  # three real sends
    assert most_at_once <= SENDS_AT_ONCE
    assert len(waited) >= 1, "no replica was seen waiting for its turn"
    assert any("waiting to send" in line for line in shown), shown
    # each node really holds the bundle it was sent, whole
    for name in NODES:
        held = wait_for(
            lambda n=name: list((cluster.worker_root(n) / "bundles").glob("[0-9a-f]*")),
            f"{name}'s copy of the bundle",
        )
        assert held[0].stat().st_size == bundle.stat().st_size
