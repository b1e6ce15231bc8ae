"""A real master and two real workers shared by the integration tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cluster import LocalCluster

H = 0.5  # heartbeat: short so liveness tests run quickly


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("cluster")), heartbeat=H)
    try:
        c.start_master()
        c.start_worker("n1")
        c.start_worker("n2")
        yield c
    finally:
        c.stop()
