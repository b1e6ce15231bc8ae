"""`corral logs -f X | less`: a reader that stops reading costs the master nothing.

The follower's stream is paused at a byte budget and resumed from its offset
once the reader catches up, so the master holds about a MiB for it, not the
log, and the reader still gets every byte.
"""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from tests.cli.conftest import REPO, Cluster, corral_argv, wait_for

pytestmark = pytest.mark.timeout(90)

SIZE = 64 * 1024 * 1024


def test_a_reader_that_stops_reading_is_not_buffered_by_the_master(lone_cluster: Cluster) -> None:
    c = lone_cluster
    assert c.master is not None
    master = psutil.Process(c.master.pid)
    script = f"head -c {SIZE} /dev/zero | tr '\\0' x"
    r = c.corral("launch", "--node", "w1", "--", "sh", "-c", script)
    assert r.status == 0, r.err
    target = r.out.strip()
    wait_for(
        lambda: c.corral("ps", "--all", "--json").json()["procs"][0]["state"] == "exited",
        "the writer to finish its 64 MiB",
    )
    before = master.memory_info().rss
    # The reader: stdout is a pipe nobody reads (yet), as `| less` on a paused pager.
    reader = subprocess.Popen(
        corral_argv("logs", "-f", "--tail", "all", target),
        env=c.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Unthrottled, the worker sends the whole log within this window.
        peak = before
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            peak = max(peak, master.memory_info().rss)
            time.sleep(0.05)
        assert peak - before < 24 * 1024 * 1024, f"master grew {(peak - before) >> 20} MiB"
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert len(out) == SIZE and out.count(b"x") == SIZE  # every byte, once, in order
