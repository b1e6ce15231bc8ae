"""One history rule for the master and its workers: count and age, from the config.

The master keeps the newest ``[history] keep`` ended processes per node and
tells each worker the same rule, so the view after a worker restart (built
from the worker's records) is the view before it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cli.conftest import Cluster, stop_process, wait_for

pytestmark = pytest.mark.timeout(90)


def ended(c: Cluster) -> list[str]:
    procs = c.corral("ps", "--all", "--json").json()["procs"]
    return sorted(p["key"] for p in procs if p["state"] in ("exited", "killed", "unknown"))


def test_the_master_and_a_restarted_worker_keep_the_same_history(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text('[history]\nkeep = 3\nmax_age = "1d"\n')
    try:
        c.start_master()
        c.start_worker("w1")
        c.wait_alive("w1")
        keys = []
        for i in range(7):
            r = c.corral("launch", "--node", "w1", "--", "sh", "-c", f"exit {i}")
            assert r.status == 0, r.err
            keys.append(r.out.strip())
            # One at a time: each ends before the next starts, so the newest are the last.
            wait_for(lambda k=keys[-1]: k in ended(c), f"{keys[-1]} to end")
        wait_for(lambda: len(ended(c)) == 3 and keys[-1] in ended(c), "the master to keep 3")
        before = ended(c)
        assert before == sorted(keys[-3:])
        stop_process(c.workers["w1"], signal.SIGTERM)
        c.start_worker("w1")
        c.wait_alive("w1")
        assert ended(c) == before  # rebuilt from the worker's records: the same three
    finally:
        c.close()


def test_a_bad_history_setting_stops_the_master_with_one_line(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text("[history]\nkeep = -1\n")
    r = c.corral("master", "--headless", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                 "--state-dir", str(c.state))  # fmt: skip
    assert r.status != 0
    assert r.err.strip().endswith("history.keep: expected 0-1000000, got -1"), r.err
