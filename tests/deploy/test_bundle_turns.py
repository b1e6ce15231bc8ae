"""A bundle goes to `SENDS_AT_ONCE` nodes at a time, the others waiting their turn.

A real master, three real workers and a private sshd: a job of three
replicas spread over the three nodes sends the bundle three times, and
the replicas' tickets, read as fast as the API answers, never show bytes
flowing to more than two nodes at once, while the third says it waits.
Nodes whose SSH port accepts and never answers hold no turn while their
push waits for a banner: the node behind them gets its bundle at once.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tarfile
import threading
import time
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


def start(tmp_path: Path, sshd: Sshd, workers: dict[str, tuple[int, str]]) -> LocalCluster:
    """A master with deploy's SSH settings for ``sshd``; ``workers``: name -> (SSH port, --mem)."""
    c = LocalCluster(tmp_path / "cluster", heartbeat=1.0)
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text(f'[ssh]\nuser = "{sshd.user}"\nkey = "{sshd.key}"\n')
    shutil.copy(sshd.known_hosts, c.state / "known_hosts")
    try:
        c.start_master()
        for name, (port, mem) in workers.items():
            c.start_worker(name, extra_args=["--ssh-port", str(port), "--mem", mem])
    except BaseException:
        c.stop()
        raise
    return c


@pytest.fixture
def cluster(tmp_path: Path, sshd: Sshd) -> Iterator[LocalCluster]:
    c = start(tmp_path, sshd, {name: (sshd.port, "1G") for name in NODES})
    try:
        yield c
    finally:
        c.stop()


def spread_job(bundle: Path, app: str, replicas: int, mem: int) -> dict[str, Any]:
    """A job body: ``true`` on ``replicas`` nodes, one a node, carrying ``bundle``."""
    return {
        "argv": ["true"], "replicas": replicas, "spread": True, "mem": mem,
        "app": app, "bundle": str(bundle),
    }  # fmt: skip


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
    job = cluster.call("POST", "/v1/jobs", spread_job(bundle, "turns", 3, 10 * MiB))["id"]

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
        (held,) = (cluster.worker_root(name) / "bundles").glob("[0-9a-f]*")
        assert held.stat().st_size == bundle.stat().st_size


class Silent:
    """A TCP port that takes connections and never says a word; it counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def mixed(tmp_path: Path, sshd: Sshd, silent: Silent) -> Iterator[LocalCluster]:
    """a1 and a2 (1G each) advertise the silent port, z9 (100M) the real sshd."""
    nodes = {"a1": (silent.port, "1G"), "a2": (silent.port, "1G"), "z9": (sshd.port, "100M")}
    c = start(tmp_path, sshd, nodes)
    try:
        yield c
    finally:
        c.stop()


def test_nodes_that_never_answer_ssh_hold_no_turn(
    mixed: LocalCluster, silent: Silent, tmp_path: Path
) -> None:
    bundle = data_bundle(tmp_path / "small.tar", 1 * MiB)
    # Job 1 fits a1 and a2 only (500M each, spread): both sends wait for a banner.
    first = mixed.call("POST", "/v1/jobs", spread_job(bundle, "silent", 2, 500 * MiB))["id"]
    wait_for(lambda: len(silent.held) >= 2, "both silent nodes' SSH connections")
    # Job 2 goes to z9 (the fullest node that fits 10M): its send must not wait for them.
    t0 = time.monotonic()
    job = mixed.call("POST", "/v1/jobs", spread_job(bundle, "silent", 1, 10 * MiB))["id"]

    def z9_sent() -> dict[str, Any] | None:
        t: dict[str, Any] = mixed.call("GET", f"/v1/jobs/{job}")
        (rep,) = t["replicas"]
        return rep if rep["steps"] and rep["steps"][0].get("ended_at") else None

    z9 = wait_for(z9_sent, "z9 to be sent its bundle", 30)
    took = time.monotonic() - t0
    assert z9["node"] == "z9" and z9["steps"][0]["sent"] == bundle.stat().st_size, z9
    assert not z9["steps"][0]["failed"], z9
    assert took < 10, f"z9 waited {took:.1f} s behind the silent nodes"
    t = mixed.call("GET", f"/v1/jobs/{first}")
    assert all(r["steps"][0].get("ended_at") is None for r in t["replicas"]), t  # still waiting

    def silent_failed() -> dict[str, Any] | None:
        t: dict[str, Any] = mixed.call("GET", f"/v1/jobs/{first}")
        return t if all(r["state"] == "failed" for r in t["replicas"]) else None

    t = wait_for(silent_failed, "a1's and a2's sends to fail", 40)
    for r in t["replicas"]:
        assert r["reason"].startswith(f"bundle not sent to {r['node']}: "), r
        assert "\n" not in r["reason"]
