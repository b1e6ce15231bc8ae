"""Commands under partitions: frozen workers, dead connections, retried launches.

Real master and workers as processes; a worker is frozen with SIGSTOP (its
kernel still takes the bytes, so frames wait in its socket for the thaw) or
killed outright.  Nothing here sleeps and hopes: each wait has a condition.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import (
    REPO,
    Cluster,
    Result,
    corral_argv,
    pid_gone,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)


def processes_running(argv: list[str], under: Path | None = None) -> list[int]:
    """Pids of live processes whose command line is exactly ``argv`` (run from ``under``)."""
    want = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() != want or pid_gone(int(entry.name)):
                continue
            if under is None or Path(os.readlink(entry / "cwd")).is_relative_to(under):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def running_exactly(argv: list[str], under: Path, pids: list[int]) -> None:
    """Wait until the live processes running ``argv`` are exactly ``pids``.

    A launch's reply names its pid before the child has exec'd, so the command
    line can still be the shim's for a moment after the reply. A process too
    many never goes away, so this still fails on a duplicate.
    """
    want = sorted(pids)
    seen: list[int] = []

    def check() -> bool:
        seen[:] = sorted(processes_running(argv, under))
        return seen == want

    try:
        wait_for(check, f"exactly {len(want)} processes running {argv}", 10)
    except AssertionError as e:
        raise AssertionError(f"{e}: running {seen}, expected {want}") from None


def launched(c: Cluster, node: str, *argv: str) -> int:
    r = c.corral("launch", "--node", node, "--", *argv)
    assert r.status == 0, r.err
    return int(r.out.strip().rpartition(":")[2])


def worker_log(c: Cluster, name: str) -> str:
    return (c.tmp / f"{name}.log").read_text(errors="replace")


def node_state(c: Cluster, name: str) -> str:
    r = c.corral("nodes", "--json")
    assert r.status == 0, r.err
    return next(n["state"] for n in r.json()["nodes"] if n["name"] == name)


def start(c: Cluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        corral_argv(*args),
        env=c.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=30)
    return Result(proc.returncode, out, err)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    """A master beating every 2 s (slow enough to act on a frozen node before it is lost)."""
    c = Cluster(tmp_path, heartbeat=2.0)
    try:
        c.start_master()
        c.start_worker("w1")
        c.start_worker("w2")
        c.wait_alive("w1", "w2")
        yield c
    finally:
        for proc in c.workers.values():  # a frozen worker would ignore SIGTERM
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        c.close()


def test_commands_to_a_frozen_worker_fail_and_never_run_after(pair: Cluster) -> None:
    c = pair
    victim = launched(c, "w1", "sleep", "300")
    bystander = launched(c, "w2", "sleep", "300")
    frozen = c.workers["w1"]
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        stop = start(c, "stop", f"w1:{victim}", f"w2:{bystander}")
        launch = start(c, "launch", "--node", "w1", "--node", "w2", "--", "sleep", "301")
        stopped, started = finish(stop), finish(launch)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Both verbs failed on w1 and did their work on w2.
    assert stopped.status == 1 and started.status == 1
    assert f"w1:{victim}" in stopped.err and "w2" not in stopped.err
    assert "launch on w1 failed" in started.err
    assert started.out.startswith("w2:")
    wait_for(lambda: pid_gone(bystander), "the SIGINT on w2 to land")
    # The thawed worker read both commands from its socket and dropped them as late.
    wait_for(lambda: "dropped Signal" in worker_log(c, "w1"), "w1 to drop the late stop")
    wait_for(lambda: "dropped Launch" in worker_log(c, "w1"), "w1 to drop the late launch")
    c.wait_alive("w1")
    assert not pid_gone(victim), "the stop reported as failed was carried out later"
    assert len(processes_running(["sleep", "301"], c.tmp)) == 1  # w2's only
    ps = c.corral("ps", "--node", "w1", "--all", "--json").json()["procs"]
    assert [p["argv"] for p in ps] == [["sleep", "300"]]


def test_a_lost_node_is_refused_at_once_and_the_others_still_act(pair: Cluster) -> None:
    c = pair
    victim = launched(c, "w1", "sleep", "300")
    bystander = launched(c, "w2", "sleep", "300")
    os.kill(c.workers["w1"].pid, signal.SIGSTOP)
    try:
        wait_for(lambda: node_state(c, "w1") == "lost", "w1 to be lost", 10)
        r = c.corral("stop", f"w1:{victim}", f"w2:{bystander}")
        lr = c.corral("launch", "--node", "w1", "--", "sleep", "302")
    finally:
        os.kill(c.workers["w1"].pid, signal.SIGCONT)
    assert r.status == 1
    assert f"w1:{victim}: w1 is lost (no heartbeat for" in r.err, r.err
    assert "delivered SIGINT to w2" in r.out
    wait_for(lambda: pid_gone(bystander), "the SIGINT on w2 to land")
    assert lr.status == 1 and "w1 is lost (no heartbeat for" in lr.err, lr.err
    c.wait_alive("w1")
    assert not pid_gone(victim)
    assert processes_running(["sleep", "302"], c.tmp) == []


def test_a_closed_connection_makes_the_node_lost_at_once(tmp_path: Path) -> None:
    # Beats every 30 s: missed beats would take a minute to notice.
    c = Cluster(tmp_path, heartbeat=30.0)
    try:
        c.start_master()
        c.start_worker("w1")
        c.wait_alive("w1")
        c.workers["w1"].kill()  # the kernel closes its socket: the master reads EOF
        c.workers["w1"].wait()
        wait_for(lambda: node_state(c, "w1") == "lost", "w1 to be lost", 10)
        events = c.corral("nodes", "--json").json()["nodes"]
        assert events[0]["state"] == "lost"
        log = (c.state / "events.log").read_text()
        assert "w1 is lost (connection" in log
    finally:
        c.close()


def test_a_launch_retried_with_its_key_starts_one_process(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_master()
        c.start_worker("w1")
        c.wait_alive("w1")
        argv = ["sleep", "303"]
        first = c.corral("launch", "--key", "op-1", "--node", "w1", "--", *argv)
        again = c.corral("launch", "--key", "op-1", "--node", "w1", "--", *argv)
        assert first.status == 0 and again.status == 0, first.err + again.err
        assert again.out == first.out
        # A restarted master knows nothing of the key; the worker does.
        assert c.master is not None
        c.master.kill()
        c.master.wait()
        c.start_master()
        c.wait_alive("w1")
        third = c.corral("launch", "--key", "op-1", "--node", "w1", "--", *argv)
        assert third.status == 0, third.err
        assert third.out == first.out
        assert "launch key op-1 seen before" in worker_log(c, "w1")
        assert len(processes_running(argv, c.tmp)) == 1
        other = c.corral("launch", "--key", "op-1", "--node", "w1", "--", "sleep", "304")
        assert other.status == 1 and "was used for another launch" in other.err
    finally:
        c.close()


def test_a_frozen_master_is_noticed_and_the_worker_comes_back(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_master()
        c.start_worker("w1")
        c.wait_alive("w1")
        assert c.master is not None
        os.kill(c.master.pid, signal.SIGSTOP)
        try:
            wait_for(
                lambda: "no word from the master" in worker_log(c, "w1"),
                "the worker to notice the silence",
                10,
            )
        finally:
            os.kill(c.master.pid, signal.SIGCONT)
        c.wait_alive("w1")
        pid = launched(c, "w1", "sleep", "305")  # and it answers requests
        assert not pid_gone(pid)
    finally:
        if c.master is not None and c.master.poll() is None:
            os.kill(c.master.pid, signal.SIGCONT)
        c.close()


def test_launches_in_flight_when_the_master_dies_start_once_each(tmp_path: Path) -> None:
    """60 launches race a kill -9 of the master; retried by key, each ran exactly once."""
    import concurrent.futures
    import http.client
    import json

    c = Cluster(tmp_path)
    try:
        c.start_master()
        c.start_worker("w1")
        c.wait_alive("w1")
        token = (c.state / "token").read_text().strip()
        argv = ["sleep", "306"]

        def post(key: str) -> int | None:
            host, port = c.api.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            body = json.dumps({"argv": argv, "nodes": ["w1"], "key": key})
            headers = {"Authorization": f"Bearer {token}"}
            try:
                conn.request("POST", "/v1/launch", body=body, headers=headers)
                reply = json.loads(conn.getresponse().read())
                return int(reply["procs"][0]["pid"]) if reply.get("procs") else None
            except (OSError, http.client.HTTPException, ValueError):
                return None  # told it failed, or told nothing
            finally:
                conn.close()

        keys = [f"race-{i}" for i in range(60)]
        assert c.master is not None
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(post, k) for k in keys]
            wait_for(lambda: processes_running(argv, c.tmp), "the first launches to start")
            c.master.kill()
            first = [f.result() for f in futures]
        c.master.wait()
        c.start_master()
        c.wait_alive("w1")
        retried = [post(k) for k in keys]
        assert None not in retried
        for got, again in zip(first, retried, strict=True):
            assert got is None or got == again  # a reported pid is the one the retry names
        running_exactly(argv, c.tmp, retried)  # one process per key, none without one
    finally:
        c.close()
