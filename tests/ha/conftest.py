"""A real etcd (Debian's etcd-server) on loopback, and masters on it.

Tests here need etcd: without it installed they are skipped with the reason
(`.ci/run` installs it, so CI never skips them).  Everything else is real:
master and worker processes, launched programs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ha import Etcd, HaCluster, etcd_binary

H = 0.5  # heartbeat
LEASE = 2  # seconds: short, so failovers happen in test time
MEM = "64M"  # what each worker offers to jobs: one replica of 64M fills a node


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server; .ci/run does)")
    server = Etcd(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def ha(tmp_path: Path, etcd: Etcd) -> Iterator[HaCluster]:
    """Masters m1 (leading: started first) and m2 on ``etcd``, workers n1 and n2."""
    c = HaCluster(tmp_path, etcd, heartbeat=H, lease=LEASE)
    try:
        c.start_ha_master("m1")
        c.start_ha_master("m2")
        c.start_worker("n1", extra_args=["--mem", MEM])
        c.start_worker("n2", extra_args=["--mem", MEM])
        yield c
    finally:
        c.stop()
