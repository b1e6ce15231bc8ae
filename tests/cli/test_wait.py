"""``stop --wait`` and ``kill --wait``: the signal, then how each target ended, in one command.

Real master, real workers, real programs: one that ends on SIGINT, one that
ignores it (the wait times out and says which is still running), and
SIGKILL that nothing ignores.  The HTTP API is asked the same directly.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from typing import Any

from tests.cli.conftest import Cluster, pid_gone, wait_for
from tests.cli.test_verbs import launch_one
from tests.procs import ignores

ENDED = re.compile(r"(w\d:\d+) (killed by SIG\w+|exited \d+) after (\d+\.\d\d) s")


def api_signal(cluster: Cluster, body: dict[str, Any]) -> Any:
    token = (cluster.state / "token").read_text().strip()
    req = urllib.request.Request(
        f"http://{cluster.api}/v1/signal",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_stop_wait_reports_how_each_ended(cluster: Cluster) -> None:
    pids = [launch_one(cluster, node, "sleep", "30") for node in ("w1", "w2")]
    keys = [f"w1:{pids[0]}", f"w2:{pids[1]}"]
    r = cluster.corral("stop", "--wait", *keys)
    assert (r.status, r.err) == (0, ""), r
    lines = r.out.splitlines()
    assert len(lines) == 2, r.out
    got = {m.group(1): m.group(2) for m in map(ENDED.fullmatch, lines) if m}
    assert got == dict.fromkeys(keys, "killed by SIGINT"), r.out
    assert all(pid_gone(p) for p in pids)  # ended before the command returned


def test_stop_wait_times_out_on_a_program_that_ignores_sigint(cluster: Cluster) -> None:
    script = ["sh", "-c", "trap '' INT; sleep 30"]
    stubborn = launch_one(cluster, "w1", *script)
    wait_for(lambda: ignores(stubborn, script, signal.SIGINT), "the shell's trap")
    polite = launch_one(cluster, "w2", "sleep", "30")
    r = cluster.corral("stop", "--timeout", "0.5", f"w1:{stubborn}", f"w2:{polite}")
    assert r.status == 1, r
    assert ENDED.fullmatch(r.out.strip()) and r.out.startswith(f"w2:{polite} killed by SIGINT")
    assert r.err_lines == [f"corral: w1:{stubborn} still running 0.5 s after SIGINT"], r.err
    assert not pid_gone(stubborn)

    r = cluster.corral("kill", "--wait", f"w1:{stubborn}")
    assert r.status == 0, r
    m = ENDED.fullmatch(r.out.strip())
    assert m and m.groups()[:2] == (f"w1:{stubborn}", "killed by SIGKILL"), r.out
    wait_for(lambda: pid_gone(stubborn), "the killed shell to be gone")


def test_wait_in_the_http_api_and_its_bad_input(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w2", "sleep", "30")
    reply = api_signal(
        cluster, {"targets": [f"w2:{pid}"], "signal": "SIGKILL", "wait": True, "timeout": 10}
    )
    (r,) = reply["results"]
    assert (r["target"], r["delivered"], r["ended"], r["reason"]) == (
        f"w2:{pid}",
        True,
        True,
        "killed by SIGKILL",
    )
    assert 0 <= r["seconds"] < 10
    plain = api_signal(cluster, {"targets": [f"w2:{pid}"], "signal": "SIGINT"})
    assert set(plain["results"][0]) == {"target", "delivered", "message"}  # no wait: as before

    for bad in ("0", "-1", "nan", "3601"):
        r2 = cluster.corral("stop", "--timeout", bad, f"w2:{pid}")
        assert r2.status == 2 and len(r2.err_lines) == 1 and "--timeout" in r2.err, r2


def test_wait_on_a_target_that_failed_still_waits_for_the_others(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sleep", "30")
    r = cluster.corral("kill", "--wait", f"w1:{pid}", "w1:999999")
    assert r.status == 1
    assert ENDED.fullmatch(r.out.strip()), r.out
    assert r.err_lines == ["corral: no such process: w1:999999"], r.err
