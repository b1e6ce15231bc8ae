"""Jobs end to end: a real master, real workers offering 250M each, real programs.

Placement, the FIFO queue and its reasons, cancel, the states a job ends
in, bad input, a master killed -9 and restarted, and a node lost under a
running replica.  Every check reads what really happened: processes in
/proc, files on the workers' disks, tickets through the CLI.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Cluster, pid_gone, wait_for
from tests.cli.test_partitions import processes_running, running_exactly

pytestmark = pytest.mark.timeout(120)

OFFER = "250M"
LONG = ["sleep", "307"]  # a command line no other test runs, to count its processes


@pytest.fixture
def jc(tmp_path: Path) -> Iterator[Cluster]:
    """Two workers, w1 and w2, each offering 250M to jobs."""
    c = Cluster(tmp_path)
    try:
        c.start_master()
        for name in ("w1", "w2"):
            c.start_worker(name, "--mem", OFFER)
        c.wait_alive("w1", "w2")
        yield c
    finally:
        c.close()


def submit(c: Cluster, *args: str) -> int:
    r = c.corral("submit", *args)
    assert r.status == 0, r
    return int(r.out.strip())


def ticket(c: Cluster, job: int) -> dict[str, Any]:
    r = c.corral("job", str(job), "--json")
    assert r.status == 0, r
    return dict(r.json())


def jobs(c: Cluster, *args: str) -> dict[int, dict[str, Any]]:
    r = c.corral("jobs", "--json", *args)
    assert r.status == 0, r
    return {j["id"]: j for j in r.json()["jobs"]}


def wait_job(c: Cluster, job: int, *states: str, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        t = ticket(c, job)
        return t if t["state"] in states else None

    return wait_for(check, f"job {job} to be {' or '.join(states)}", timeout)


def all_running(c: Cluster, job: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        t = ticket(c, job)
        alive = all(r["state"] in ("running", "sleeping") for r in t["replicas"])
        return t if alive and t["state"] == "running" else None

    return wait_for(check, f"every replica of job {job} to run", 20)


def pids(t: dict[str, Any]) -> list[int]:
    return [r["pid"] for r in t["replicas"]]


def test_placement_queue_reasons_and_cancel_in_order(jc: Cluster) -> None:
    first = submit(jc, "--replicas", "4", "--mem", "100M", "--", *LONG)
    t1 = all_running(jc, first)
    assert sorted(r["node"] for r in t1["replicas"]) == ["w1", "w1", "w2", "w2"]
    running_exactly(LONG, jc.tmp, pids(t1))  # really started

    second = submit(jc, "--replicas", "2", "--mem", "100M", "--", *LONG)
    third = submit(jc, "--mem", "10M", "--name", "small", "--", *LONG)
    listed = jobs(jc)
    assert listed[second]["state"] == "queued" and listed[second]["position"] == 1
    assert listed[second]["reason"] == ("needs 2 x 100M; w1 50M free of 250M, w2 50M free of 250M")
    assert listed[third]["state"] == "queued" and listed[third]["position"] == 2
    assert listed[third]["reason"] == f"behind job {second}"
    text = jc.corral("jobs").out
    assert f"behind job {second}" in text and "small" in text

    r = jc.corral("cancel", str(first))
    assert r.status == 0 and f"job {first} cancelled: SIGINT to " in r.out, r
    # every replica is named, even one whose end was reported before the reply
    assert all(rep["target"] in r.out for rep in t1["replicas"]), r
    wait_for(lambda: all(pid_gone(p) for p in pids(t1)), "the first job's processes to end")
    done = wait_job(jc, first, "cancelled")
    assert all(r["state"] == "killed" for r in done["replicas"]), done
    assert all("SIGINT" in r["reason"] for r in done["replicas"]), done
    t2, t3 = all_running(jc, second), all_running(jc, third)
    assert t2["started_at"] <= t3["started_at"]  # in queue order
    running_exactly(LONG, jc.tmp, pids(t2) + pids(t3))


def test_spread_with_more_replicas_than_nodes_waits(jc: Cluster) -> None:
    job = submit(jc, "--replicas", "3", "--spread", "--mem", "10M", "--", *LONG)
    t = ticket(jc, job)
    assert t["state"] == "queued" and t["position"] == 1
    assert t["reason"].startswith("needs 3 x 10M on separate nodes; w1 250M free of 250M")
    assert processes_running(LONG, jc.tmp) == []
    two = submit(jc, "--replicas", "2", "--spread", "--mem", "10M", "--", *LONG)
    assert ticket(jc, two)["reason"] == f"behind job {job}"  # strict FIFO


def test_job_states_and_working_directories(jc: Cluster) -> None:
    script = "pwd > out.txt; echo $CORRAL_JOB $CORRAL_REPLICA $CORRAL_REPLICAS $MODE > env.txt"
    ok = submit(jc, "--replicas", "3", "--env", "MODE=fast", "--", "sh", "-c", script)
    t = wait_job(jc, ok, "succeeded")
    assert t["ended_at"] >= t["started_at"] >= t["submitted_at"]
    for r in t["replicas"]:
        assert r["state"] == "exited" and r["exit_code"] == 0
        where = jc.tmp / r["node"] / "apps" / "sh" / "jobs" / str(ok) / str(r["index"])
        assert (where / "out.txt").read_text().strip() == str(where)
        # Each replica knows its job and its own share of the work.
        assert (where / "env.txt").read_text().split() == [str(ok), str(r["index"]), "3", "fast"]
    assert "MODE=fast" in jc.corral("job", str(ok)).out

    bad = submit(jc, "--replicas", "2", "--name", "doomed", "--", "sh", "-c", "exit 3")
    t = wait_job(jc, bad, "failed")
    assert "exited 3" in t["reason"], t
    missing = submit(jc, "--", "/nonexistent/program")
    t = wait_job(jc, missing, "failed")
    assert "launch failed" in t["replicas"][0]["reason"], t
    assert jobs(jc) == {}  # ended jobs leave the default list ...
    assert {ok, bad, missing} <= set(jobs(jc, "--all"))  # ... not --all
    out = jc.corral("job", str(bad)).out
    assert "failed" in out and "exited 3" in out and "doomed" in out


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--replicas", "0", "--", "true"], 2, "bad replica count 0"),
        (["--replicas", "-2", "--", "true"], 2, "bad replica count"),
        (["--mem", "10Q", "--", "true"], 2, "bad size '10Q'"),
        (["--mem=-1G", "--", "true"], 2, "bad size '-1G': it must be positive"),
        (["--mem", "99999999T", "--", "true"], 2, "larger than any machine"),
        (["--mem", "10G", "--", "true"], 1, "can never run: needs 1 x 10G; w1 offers 250M"),
        (["--output", "../x", "--", "true"], 1, "'..' would leave the job's directory"),
        (["--output", "/etc/passwd", "--", "true"], 1, "must be relative"),
        (["--app", "../up", "--", "true"], 1, "invalid app name"),
        (["--env", "CORRAL_REPLICA=7", "--", "true"], 1, "CORRAL_REPLICA: corral sets it"),
        (["--"], 2, "nothing to run"),
    ],
)
def test_bad_submissions_are_one_line_and_change_nothing(
    jc: Cluster, args: list[str], status: int, message: str
) -> None:
    before = jobs(jc, "--all")
    r = jc.corral("submit", *args)
    assert r.status == status, r
    assert len(r.err_lines) == 1 and message in r.err, r
    assert jobs(jc, "--all") == before
    assert not list((jc.tmp / "w1").glob("apps/*/jobs"))


def test_unknown_and_ended_jobs_and_fetch_into_a_file(jc: Cluster, tmp_path: Path) -> None:
    for verb in (["job", "999"], ["cancel", "999"], ["fetch", "999"]):
        r = jc.corral(*verb)
        assert r.status == 1 and r.err_lines == ["corral: no such job: 999"], r
    r = jc.corral("job", "abc")
    assert r.status == 2 and "bad job id 'abc'" in r.err
    done = submit(jc, "--", "true")
    wait_job(jc, done, "succeeded")
    r = jc.corral("cancel", str(done))
    assert r.status == 1 and r.err_lines == [f"corral: job {done} has already ended (succeeded)"]
    running = submit(jc, "--", *LONG)
    all_running(jc, running)
    r = jc.corral("cancel", str(running), "999")  # one bad id: nothing cancelled
    assert r.status == 1 and "no such job: 999" in r.err
    assert ticket(jc, running)["state"] == "running"
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    r = jc.corral("fetch", str(done), "--to", str(blocker))
    assert r.status == 1 and "it is a file, not a directory" in r.err, r
    assert blocker.read_text() == "keep me"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / str(done)).write_text("")
    r = jc.corral("fetch", str(done), "--to", str(tmp_path / "out"))
    assert r.status == 1 and "it is a file" in r.err, r


def test_master_kill_9_and_restart_keeps_jobs_order_and_launches_nothing_twice(
    jc: Cluster,
) -> None:
    first = submit(jc, "--replicas", "4", "--mem", "100M", "--", *LONG)
    t1 = all_running(jc, first)
    second = submit(jc, "--replicas", "2", "--mem", "100M", "--", *LONG)
    third = submit(jc, "--mem", "10M", "--", *LONG)
    before = jobs(jc)
    assert jc.master is not None
    jc.master.send_signal(signal.SIGKILL)
    jc.master.wait()
    jc.start_master()
    jc.wait_alive("w1", "w2")

    def found() -> dict[int, dict[str, Any]] | None:
        listed = jobs(jc)
        reps = listed[first]["replicas"]
        return listed if all(r["pid"] and not r["reason"] for r in reps) else None

    # Until its node reports, a replica is shown "as last seen; waiting for w1 to report".
    after = wait_for(found, "the restarted master to find the running replicas")
    assert list(after) == [first, second, third]
    assert pids(after[first]) == pids(t1) and after[first]["state"] == "running"
    for job in (second, third):
        assert after[job]["state"] == "queued"
        assert after[job]["position"] == before[job]["position"]
        assert after[job]["reason"] == before[job]["reason"]
    running_exactly(LONG, jc.tmp, pids(t1))  # none twice
    # The queue still moves, in order, once room frees.
    jc.corral("cancel", str(first))
    t2, t3 = all_running(jc, second), all_running(jc, third)
    assert t2["started_at"] <= t3["started_at"]
    wait_for(lambda: len(processes_running(LONG, jc.tmp)) == 3, "three replicas, no more")


def test_a_node_lost_under_a_replica_fails_the_job_and_its_return_shows_the_truth(
    jc: Cluster,
) -> None:
    job = submit(jc, "--replicas", "2", "--spread", "--mem", "10M", "--", *LONG)
    t = all_running(jc, job)
    w2 = jc.workers["w2"]
    os.kill(w2.pid, signal.SIGSTOP)
    try:
        lost = wait_job(jc, job, "failed")
        rep = next(r for r in lost["replicas"] if r["node"] == "w2")
        assert rep["state"] == "lost" and rep["reason"] == "w2 is lost", lost
        assert "w2 is lost" in lost["reason"]
        assert not pid_gone(rep["pid"])  # the program itself runs on
    finally:
        os.kill(w2.pid, signal.SIGCONT)
    back = wait_job(jc, job, "running")
    assert pids(back) == pids(t) and all(
        r["state"] in ("running", "sleeping") for r in back["replicas"]
    )
