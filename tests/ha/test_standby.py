"""Standby masters on etcd: election, redirect, forwarding, failover and fencing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.cluster import wait_until
from bench.ha import HaCluster

pytestmark = pytest.mark.timeout(90)


def test_two_masters_one_leads(ha: HaCluster) -> None:
    view = ha.masters_view("m2")  # a standby answers too
    assert view["m1"]["role"] == "leader" and view["m1"]["term"] > 0
    assert view["m2"]["role"] == "standby" and view["m2"]["term"] == 0
    ha.use("m1")
    assert set(ha.nodes()) == {"n1", "n2"}  # workers listed m1 first and stayed
    assert all(n["state"] == "alive" for n in ha.nodes().values())


def test_worker_listing_the_standby_first_goes_to_the_leader(ha: HaCluster) -> None:
    root = ha.worker_root("n3")
    ha.listen = ",".join(reversed([m.listen for m in ha.masters.values()]))
    ha.masters = dict(reversed(list(ha.masters.items())))  # m2 (standby) listed first
    ha.use("m1")
    ha.start_worker("n3")
    assert ha.nodes()["n3"]["state"] == "alive"
    assert (root / "term").read_text().strip() == str(ha.masters_view()["m1"]["term"])


def test_a_worker_told_only_the_standby_finds_each_leader(ha: HaCluster) -> None:
    """Sent on to m1 by m2, the worker goes back to m2 once m1 is gone, and finds it leading."""
    from bench.cluster import LocalCluster

    ha.listen = ha.masters["m2"].listen  # the only address it is given
    LocalCluster.start_worker(ha, "n3")
    ha.use("m1")
    assert ha.nodes()["n3"]["state"] == "alive"
    ha.kill_master("m1")
    ha.use("m2")
    wait_until(lambda: ha.leader() == "m2", 20, "m2 to lead")
    wait_until(lambda: ha.nodes().get("n3", {}).get("state") == "alive", 20, "n3 back at m2")
    log = (ha.base / "n3.out").read_text()
    assert "is a standby; the leader is" in log and "connected to" in log


def test_client_at_the_standby_launches_through_the_leader(ha: HaCluster) -> None:
    ha.use("m2")
    key = ha.launch("n1", ["sleep", "30"])
    ha.use("m1")
    assert ha.wait_proc(key, lambda p: p["state"] in ("running", "sleeping"))
    out = subprocess.run(
        [sys.executable, "-m", "corral", "masters", "--api", ha.masters["m2"].api],
        capture_output=True,
        text=True,
        env={"CORRAL_TOKEN": ha.token, "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["MASTER", "ROLE"]
    assert any(line.split()[:2] == ["m1", "leader"] for line in lines)
    assert any(line.split()[:2] == ["m2", "standby"] for line in lines)


def test_wrong_etcd_url_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral",
            "master",
            "--headless",
            "--state-dir",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--etcd",
            "http://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "etcd" in out.stderr and "127.0.0.1:1" in out.stderr
    assert not (tmp_path / "listen").exists()  # nothing bound
    wait_until(lambda: True)


MB = 1024 * 1024


def _sleepers(ha: HaCluster) -> list[int]:
    """PIDs of the `sleep` programs the workers run (every launch, whoever asked)."""
    import psutil

    roots = [str(ha.worker_root(n)) for n in ha.workers]
    out = []
    for p in psutil.process_iter(["name", "cwd"]):
        cwd = p.info.get("cwd") or ""
        if p.info.get("name") == "sleep" and any(cwd.startswith(r) for r in roots):
            out.append(p.pid)
    return sorted(out)


def _jobs(ha: HaCluster) -> dict[int, dict[str, object]]:
    return {j["id"]: j for j in ha.call("GET", "/v1/jobs")["jobs"]}


def _submit(ha: HaCluster, replicas: int, name: str) -> int:
    body = {"argv": ["sleep", "300"], "replicas": replicas, "mem": 64 * MB, "spread": True}
    body["name"] = name
    return int(ha.call("POST", "/v1/jobs", body)["id"])


def test_kill_9_the_leader_jobs_go_on(ha: HaCluster) -> None:
    running = _submit(ha, 2, "first")  # fills n1 and n2
    queued = [_submit(ha, 1, "second"), _submit(ha, 1, "third")]
    wait_until(lambda: _jobs(ha)[running]["state"] == "running", 20, "the first job to run")
    wait_until(lambda: len(_sleepers(ha)) == 2, 20, "its two replicas")
    before = _sleepers(ha)
    term = ha.masters_view("m2")["m1"]["term"]
    placed = f"job {running} (first) placed on n1, n2"
    # Only the leader places; the standby shows it from the recent events in etcd.
    wait_until(lambda: placed in _events(ha, "m2"), 20, "the leader's events at the standby")

    ha.kill_master("m1")
    ha.use("m2")
    wait_until(lambda: ha.leader() == "m2", 20, "m2 to lead")
    view = ha.masters_view()
    assert view["m2"]["term"] > term
    wait_until(
        lambda: all(n["state"] == "alive" for n in ha.nodes().values()) and len(ha.nodes()) == 2,
        20,
        "n1 and n2 at m2",
    )
    jobs = _jobs(ha)
    assert jobs[running]["state"] == "running"
    assert [jobs[j]["state"] for j in queued] == ["queued", "queued"]
    assert [jobs[j]["position"] for j in queued] == [1, 2]  # the queue's order kept
    assert _sleepers(ha) == before  # the replicas ran on; none launched twice
    for n in ("n1", "n2"):
        assert (ha.worker_root(n) / "term").read_text().strip() == str(view["m2"]["term"])
    assert placed in _events(ha, "m2")  # the dead leader's history outlives it
    assert placed not in (ha.masters["m2"].state / "events.log").read_text()

    # The old leader, started again, joins as a standby.
    ha.start_ha_master("m1")
    wait_until(lambda: ha.masters_view("m1").get("m1", {}).get("role") == "standby", 20, "m1 back")
    assert ha.masters_view("m1")["m2"]["role"] == "leader"

    # The new leader launches: the first job's end makes room for both queued ones.
    ha.call("DELETE", f"/v1/jobs/{running}")
    wait_until(
        lambda: [_jobs(ha)[j]["state"] for j in queued] == ["running", "running"],
        20,
        "the queued jobs to run",
    )


def _events(ha: HaCluster, via: str) -> list[str]:
    saved = ha.api
    ha.use(via)
    try:
        return [e["message"] for e in ha.call("GET", "/v1/events?limit=200")["events"]]
    finally:
        ha.api = saved


def test_sigstop_leader_past_its_lease_launches_nothing(ha: HaCluster) -> None:
    import signal

    ha.use("m1")
    key = ha.launch("n1", ["sleep", "300"])
    ha.wait_proc(key, lambda p: p["state"] in ("running", "sleeping"))
    ha.kill_master("m1", signal.SIGSTOP)
    ha.use("m2")
    wait_until(lambda: ha.leader() == "m2", 20, "m2 to lead")
    wait_until(lambda: len(ha.nodes()) == 2, 20, "the workers at m2")
    wait_until(lambda: all(n["state"] == "alive" for n in ha.nodes().values()), 20, "alive")
    ha.kill_master("m1", signal.SIGCONT)
    # Woken, m1 knows at once that it may not act: a standby, it forwards to m2.
    # (its key in the masters' list went with its lease: back once it has a new one)
    wait_until(
        lambda: ha.masters_view("m1").get("m1", {}).get("role") == "standby", 20, "m1 a standby"
    )
    assert ha.masters_view("m1")["m2"]["role"] == "leader"
    ha.use("m1")
    second = ha.launch("n2", ["sleep", "300"])  # through m1, carried out by m2
    ha.use("m2")
    assert ha.wait_proc(second, lambda p: p["state"] in ("running", "sleeping"))
    # the first and the forwarded one, nothing else (the reply came before its exec)
    wait_until(lambda: len(_sleepers(ha)) == 2, 20, "exactly two programs")
    assert any("m2 leads" in line for line in _events(ha, "m1"))


def test_worker_refuses_an_older_term(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A worker that has seen term 7 refuses a command without one, with a line in its log."""
    from bench.cluster import LocalCluster

    c = LocalCluster(tmp_path, heartbeat=0.5)
    try:
        c.start_master()
        root = c.worker_root("n1")
        root.mkdir(parents=True)
        (root / "term").write_text("7\n")
        c.start_worker("n1")
        alone = c.call("GET", "/v1/masters")["masters"]  # without --etcd: the one master
        assert [(m["role"], m["term"]) for m in alone] == [("leader", 0)]
        res = c.call("POST", "/v1/launch", {"argv": ["sleep", "30"], "nodes": ["n1"]})
        assert res["procs"] == []
        assert "term 0 is older than term 7" in res["errors"]["n1"]
        log = (tmp_path / "n1.out").read_text()
        assert "refused Launch" in log and "term 0 is older than term 7" in log
    finally:
        c.stop()


def test_etcd_down_the_leader_stops_acting_and_resumes(ha: HaCluster) -> None:
    ha.use("m1")
    ha.launch("n1", ["sleep", "300"])
    wait_until(lambda: len(_sleepers(ha)) == 1, 20, "the program")
    ha.etcd.stop()
    gone = "not acting: etcd is unreachable"
    wait_until(lambda: any(gone in e for e in _events(ha, "m1")), 20, "m1 to stop acting")
    ha.use("m1")
    with pytest.raises(OSError) as refused:  # urllib's HTTPError: 503 with the reason
        ha.launch("n2", ["sleep", "300"])
    assert "etcd" in refused.value.read().decode()  # type: ignore[attr-defined]
    assert len(_sleepers(ha)) == 1  # the program launched before runs on
    ha.etcd.start()
    wait_until(lambda: ha.leader() is not None, 30, "a leader again")
    lead = ha.leader()
    assert lead is not None
    ha.use(lead)
    wait_until(lambda: len(ha.nodes()) == 2, 20, "workers at the leader")
    wait_until(lambda: all(n["state"] == "alive" for n in ha.nodes().values()), 20, "alive")
    again = ha.launch("n2", ["sleep", "300"])
    assert ha.wait_proc(again, lambda p: p["state"] in ("running", "sleeping"))
    wait_until(lambda: len(_sleepers(ha)) == 2, 20, "exactly two programs")  # once exec'd
    # The leader writes its events to etcd again: a standby reads this launch there.
    other = next(name for name in ha.masters if name != lead)
    seen = f"{again} launched"
    wait_until(lambda: any(seen in e for e in _events(ha, other)), 10, "the launch in etcd")
