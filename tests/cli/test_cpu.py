"""CPU time and CPU % of a shell loop in `ps` and `usage`, on a real master and workers.

The loop's time is spent in the children it forks: it must show while it
runs, grow, and not jump when the process is killed (issue 11, item 7).
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.cli.conftest import Cluster, wait_for
from tests.cli.test_verbs import launch_one, ps_json, wait_ended

FLOOR = 0.5  # CPU seconds the loop must show while it runs
BUSY = 20.0  # percent of a core the loop must show (it keeps one core busy)
FACTOR, SLACK = 1.5, 0.1  # what the end may add to the last live figure and the time since


def _cpu(p: dict[str, Any]) -> float:
    return float(p["cpu_user"]) + float(p["cpu_sys"])


def _column(text: str, start: str, name: str) -> str:
    """The cell under header ``name`` (right-aligned) in the row starting ``start``."""
    header, *rows = text.splitlines()
    end = header.index(f" {name}") + 1 + len(name)
    row = next(line for line in rows if line.startswith(start))
    return row[:end].split()[-1]


def test_shell_loop_shows_its_children_cpu_live_and_no_jump_at_the_end(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sh", "-c", "while :; do /bin/true; done")
    key = f"w1:{pid}"
    seen: list[float] = []

    def busy() -> dict[str, Any] | None:
        p = ps_json(cluster)[key]
        seen.append(_cpu(p))
        return p if _cpu(p) >= FLOOR and p["cpu_percent"] >= BUSY else None

    live = wait_for(busy, f"{key} to show {FLOOR} s of CPU at {BUSY}%", timeout=30)
    assert seen == sorted(seen), seen  # it only grows
    assert len(set(seen)) >= 2, seen

    r = cluster.corral("ps")
    assert r.status == 0, r.err
    header = r.out.splitlines()[0].split()
    assert header[:5] == ["PROC", "APP", "STATE", "CPU", "CPU%"], r.out
    assert float(_column(r.out, f"{key} ", "CPU%")) > 0, r.out

    r = cluster.corral("usage", "--node", "w1", "--json")
    assert r.status == 0, r.err
    (node,) = r.json()["nodes"]
    proc = next(p for p in node["procs"] if p["pid"] == pid)
    assert _cpu(proc) >= _cpu(live)
    assert node["cpu_percent"] >= proc["cpu_percent"] > 0

    r = cluster.corral("usage", "--node", "w1")
    assert r.status == 0, r.err
    assert re.search(r"^PROC\s+APP\s+STATE\s+USER\s+SYS\s+CPU%\s+RSS", r.out, re.M), r.out
    assert re.search(r"^NODE\s+PROCS\s+CPU%\s+CHILDREN USER", r.out, re.M), r.out
    nodes = r.out[r.out.index("\nNODE") + 1 :]
    assert float(_column(nodes, "w1 ", "CPU%")) > 0, r.out

    last = _cpu(ps_json(cluster)[key])
    at = time.monotonic()
    r = cluster.corral("kill", key)
    assert r.status == 0, r.err
    ended = wait_ended(cluster, key)
    elapsed = time.monotonic() - at
    final = _cpu(ended)
    assert last <= final <= FACTOR * (last + elapsed) + SLACK, (last, final, elapsed)
    assert ended["cpu_percent"] == 0.0
    r = cluster.corral("ps", "--all")
    assert _column(r.out, f"{key} ", "CPU%") == "-", r.out  # no CPU % once it has ended
