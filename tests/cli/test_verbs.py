"""The client verbs against a real headless master with two real workers."""

from __future__ import annotations

import re
import signal
import subprocess
from functools import partial
from typing import Any

from tests.cli.conftest import (
    REPO,
    Cluster,
    base_env,
    closed_port,
    corral_argv,
    pid_gone,
    run_corral,
    stop_process,
    wait_for,
)
from tests.procs import runs


def launch_one(cluster: Cluster, node: str, *argv: str, app: str | None = None) -> int:
    extra = ["--app", app] if app else []
    r = cluster.corral("launch", "--node", node, *extra, "--", *argv)
    assert r.status == 0, r.err
    m = re.fullmatch(rf"{node}:(\d+)\n", r.out)
    assert m, r.out
    return int(m.group(1))


def ps_json(cluster: Cluster, *args: str) -> dict[str, dict[str, Any]]:
    r = cluster.corral("ps", "--json", *args)
    assert r.status == 0, r.err
    return {p["key"]: p for p in r.json()["procs"]}


def wait_ended(cluster: Cluster, key: str, timeout: float = 15.0) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        p = ps_json(cluster, "--all").get(key)
        return p if p and p["state"] in ("exited", "killed", "unknown") else None

    return wait_for(ended, f"{key} to end", timeout)


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("corral: "), err
    for needle in needles:
        assert needle in lines[0], err
    assert "Traceback" not in err


# --- read verbs --------------------------------------------------------------------
def test_nodes_lists_the_alive_workers(cluster: Cluster) -> None:
    r = cluster.corral("nodes")
    assert r.status == 0, r.err
    header, *rows = r.out.splitlines()
    assert header.split()[:2] == ["NODE", "STATE"]
    assert {tuple(row.split()[:2]) for row in rows} == {("w1", "alive"), ("w2", "alive")}

    r = cluster.corral("nodes", "--json")
    assert r.status == 0, r.err
    nodes = {n["name"]: n for n in r.json()["nodes"]}
    assert set(nodes) == {"w1", "w2"}
    assert all(n["state"] == "alive" for n in nodes.values())


def test_launch_ps_stop(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sleep", "30")
    assert not pid_gone(pid)
    wait_for(lambda: runs(pid, ["sleep", "30"]), "the exec")  # it follows the reply

    r = cluster.corral("ps")
    assert r.status == 0, r.err
    row = next(line for line in r.out.splitlines() if line.startswith(f"w1:{pid} "))
    assert "sleep 30" in row
    assert f"w1:{pid}" in ps_json(cluster, "--node", "w1")

    r = cluster.corral("stop", f"w1:{pid}")
    assert (r.status, r.out, r.err) == (0, f"delivered SIGINT to w1:{pid}\n", "")
    wait_for(lambda: pid_gone(pid), "the stopped sleep to end")
    assert wait_ended(cluster, f"w1:{pid}")["reason"] == "killed by SIGINT"

    r = cluster.corral("ps", "--all")
    row = next(line for line in r.out.splitlines() if line.startswith(f"w1:{pid} "))
    assert "killed by SIGINT" in row
    assert f"w1:{pid}" not in cluster.corral("ps").out  # running ones only by default


def test_launch_all_then_kill(cluster: Cluster) -> None:
    r = cluster.corral("launch", "--all", "--", "sleep", "30")
    assert r.status == 0, r.err
    keys = r.out.split()
    assert sorted(k.split(":")[0] for k in keys) == ["w1", "w2"]

    r = cluster.corral("kill", *keys)
    assert r.status == 0, r.err
    assert sorted(r.out.splitlines()) == sorted(f"delivered SIGKILL to {k}" for k in keys)
    for key in keys:
        pid = int(key.split(":")[1])
        wait_for(partial(pid_gone, pid), f"{key} to die")
        assert wait_ended(cluster, key)["reason"] == "killed by SIGKILL"

    # Signalling what already ended delivers nothing: one line, status 1.
    r = cluster.corral("stop", keys[0])
    assert r.status == 1
    assert r.out == ""
    assert_one_line(r.err, keys[0], "already")


def test_ended_process_shows_its_exit_code(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w2", "sh", "-c", "sleep 0.2; exit 3")
    assert wait_ended(cluster, f"w2:{pid}")["reason"] == "exited 3"


def test_instant_exit_is_recorded(cluster: Cluster) -> None:
    # A program that ends before its launch reply is in: the reply must not revive it.
    pid = launch_one(cluster, "w2", "sh", "-c", "exit 4")
    assert wait_ended(cluster, f"w2:{pid}")["reason"] == "exited 4"


def test_logs_prints_the_output(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sh", "-c", "echo hello; echo oops >&2")
    wait_ended(cluster, f"w1:{pid}")
    r = cluster.corral("logs", f"w1:{pid}")
    assert (r.status, r.out, r.err) == (0, "hello\noops\n", "")
    r = cluster.corral("logs", f"w1:{pid}", "--tail", "1")
    assert (r.status, r.out) == (0, "oops\n")
    r = cluster.corral("logs", f"w1:{pid}", "--tail", "all")
    assert (r.status, r.out) == (0, "hello\noops\n")


def test_logs_follow_ends_with_the_process_and_misses_nothing(cluster: Cluster) -> None:
    script = "for i in $(seq 1 40); do echo line $i; sleep 0.02; done"
    pid = launch_one(cluster, "w2", "sh", "-c", script)
    r = cluster.corral("logs", "-f", "--tail", "all", f"w2:{pid}")
    assert r.status == 0, r.err
    assert r.out == "".join(f"line {i}\n" for i in range(1, 41))


def test_usage_reports_processes_and_node_totals(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sleep", "30")
    r = cluster.corral("usage", "--node", "w1", "--json")
    assert r.status == 0, r.err
    (node,) = r.json()["nodes"]
    assert node["node"] == "w1"
    assert {"children_user", "children_sys", "children_max_rss"} <= set(node)
    assert pid in {p["pid"] for p in node["procs"]}

    r = cluster.corral("usage")
    assert r.status == 0, r.err
    assert f"w1:{pid}" in r.out
    assert "CHILDREN MAX RSS" in r.out
    assert re.search(r"^w2\s+\d+\s", r.out, re.M), r.out
    cluster.corral("kill", f"w1:{pid}")


def test_rm_refuses_while_running_and_forces(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w2", "sleep", "30", app="rmme")
    r = cluster.corral("rm", "rmme", "--node", "w2")
    assert r.status == 1
    assert_one_line(r.err, "rm rmme on w2")
    assert not pid_gone(pid)

    r = cluster.corral("rm", "rmme", "--node", "w2", "--force", "--logs")
    assert r.status == 0, r.err
    assert r.out.startswith("w2: removed "), r.out
    assert f"stopped w2:{pid}" in r.out
    wait_for(lambda: pid_gone(pid), "the forced app's process to end")


# --- failures: one line on stderr, non-zero status ----------------------------------
def test_unknown_node(cluster: Cluster) -> None:
    for args in (("ps", "--node", "nope"), ("launch", "--node", "nope", "--", "true")):
        r = cluster.corral(*args)
        assert r.status == 1
        assert_one_line(r.err, "unknown node", "nope")


def test_no_such_process(cluster: Cluster) -> None:
    for verb in ("stop", "kill", "logs"):
        r = cluster.corral(verb, "w1:999999")
        assert r.status == 1
        assert_one_line(r.err, "no such process", "w1:999999")


def test_program_that_cannot_run(cluster: Cluster) -> None:
    r = cluster.corral("launch", "--node", "w1", "--", "/no/such/program")
    assert r.status == 1
    assert r.out == ""
    assert_one_line(r.err, "launch on w1 failed", "/no/such/program")


def test_master_unreachable(cluster: Cluster) -> None:
    port = closed_port()
    r = cluster.corral("ps", "--api", f"127.0.0.1:{port}")
    assert r.status == 1
    assert r.err == (
        f"corral: cannot reach the master at 127.0.0.1:{port}: connection refused"
        " (is `corral master` running?)\n"
    )
    # Nothing configured at all (no token either): still the unreachable master is the news.
    env = base_env(CORRAL_STATE_DIR=str(cluster.tmp / "empty"), CORRAL_API=f"127.0.0.1:{port}")
    r = run_corral("nodes", env=env)
    assert r.status == 1
    assert_one_line(r.err, "cannot reach the master")


def test_wrong_token_is_refused(cluster: Cluster) -> None:
    env = dict(cluster.env, CORRAL_TOKEN="bad")
    r = cluster.corral("nodes", env=env)
    assert r.status == 1
    assert_one_line(r.err, "auth refused")


def test_usage_errors_exit_2(cluster: Cluster) -> None:
    cases = [
        (("launch", "--", "sleep", "1"), "--node"),
        (("launch", "--node", "w1"), "nothing to launch"),
        (("launch", "--node", "w1", "--all", "--", "true"), "not allowed with"),
        (("stop", "w1"), "NODE:PID"),
        (("stop",), "required"),
        (("logs", "w1:1", "--tail", "x"), "--tail"),
        (("launch", "--node", "w1", "--env", "NOEQUALS", "--", "true"), "give NAME=VALUE"),
        (("launch", "--node", "w1", "--env", "9X=1", "--", "true"), "bad --env name '9X'"),
        (("launch", "--node", "w1", "--env", "A-B=1", "--", "true"), "bad --env name 'A-B'"),
        (("submit", "--env", "=1", "--", "true"), "bad --env name ''"),
        (("frobnicate",), "invalid choice"),
        ((), "no verb"),
    ]
    for args, needle in cases:
        r = cluster.corral(*args)
        assert r.status == 2, (args, r.err)
        assert_one_line(r.err, needle)


def test_rm_refuses_a_path(cluster: Cluster) -> None:
    r = cluster.corral("rm", "../x", "--node", "w1")
    assert r.status == 1
    assert_one_line(r.err, "invalid app name")


# --- logs -f across a master restart ------------------------------------------------
def test_logs_follow_survives_a_master_restart(lone_cluster: Cluster) -> None:
    c = lone_cluster
    script = "for i in $(seq 1 120); do echo line $i; sleep 0.03; done"
    pid = launch_one(c, "w1", "sh", "-c", script)
    out_path = c.tmp / "follow.out"
    with open(out_path, "wb") as out, open(c.tmp / "follow.err", "wb") as err:
        follower = subprocess.Popen(
            corral_argv("logs", "-f", "--tail", "all", f"w1:{pid}"),
            env=c.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        wait_for(lambda: out_path.read_bytes().count(b"\n") >= 5, "the first lines")
        assert c.master is not None
        c.master.kill()  # no goodbye: the stream just breaks
        c.master.wait()
        c.start_master(api=c.api)  # same ports: workers and the follower come back
        assert follower.wait(45) == 0, (c.tmp / "follow.err").read_text()
    finally:
        stop_process(follower)
    assert out_path.read_text() == "".join(f"line {i}\n" for i in range(1, 121))
    assert pid_gone(pid)


def test_logs_follow_ctrl_c_exits_quietly(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sh", "-c", "echo started; exec sleep 30")
    out_path = cluster.tmp / "ctrl-c.out"
    with open(out_path, "wb") as out:
        follower = subprocess.Popen(
            corral_argv("logs", "-f", f"w1:{pid}"),
            env=cluster.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
        )
    try:
        wait_for(lambda: out_path.read_bytes() == b"started\n", "the follower to print")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 130
        assert follower.stderr is not None
        assert follower.stderr.read() == b""
    finally:
        stop_process(follower)
        if follower.stderr is not None:
            follower.stderr.close()
    cluster.corral("kill", f"w1:{pid}")


# --- defects fixed: each target alone, logs -f ends as the program did -------------
def test_stop_acts_on_every_valid_target_and_reports_each_bad_one(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sleep", "30")
    r = cluster.corral("stop", f"w1:{pid}", "w1:999999", "nosuch:1")
    assert r.status == 1
    assert r.out == f"delivered SIGINT to w1:{pid}\n"
    assert r.err_lines == [
        "corral: no such process: w1:999999",
        "corral: nosuch:1: unknown node: nosuch",
    ]
    wait_for(lambda: pid_gone(pid), "the valid target to end")
    assert wait_ended(cluster, f"w1:{pid}")["reason"] == "killed by SIGINT"


def test_launch_env_reaches_the_program_and_a_key_keeps_to_its_env(cluster: Cluster) -> None:
    script = 'echo "$MODE|$SPACED|$EMPTY|${PATH:+path}"'
    r = cluster.corral(
        "launch", "--node", "w1", "--env", "MODE=fast", "--env", "SPACED=a b=c",
        "--env", "EMPTY=", "--env", "MODE=faster", "--key", "env-1", "--app", "envs",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert r.status == 0, r.err
    target = r.out.strip()
    wait_ended(cluster, target)
    # The last MODE wins; the worker's own variables (PATH) stay beneath.
    assert cluster.corral("logs", target).out == "faster|a b=c||path\n"
    # The same key with other variables is another launch: refused, nothing started.
    r = cluster.corral(
        "launch", "--node", "w1", "--env", "MODE=slow", "--key", "env-1", "--app", "envs",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert r.status == 1
    assert_one_line(r.err, "request key env-1 was used for another launch")
    assert len([p for p in ps_json(cluster, "--all").values() if p["app"] == "envs"]) == 1


def test_logs_follow_exits_with_the_programs_status(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w2", "sh", "-c", "echo working; sleep 0.2; exit 3")
    r = cluster.corral("logs", "-f", "--tail", "all", f"w2:{pid}")
    assert (r.status, r.out, r.err) == (3, "working\n", f"corral: w2:{pid} exited 3\n")

    pid = launch_one(cluster, "w2", "sh", "-c", "echo fine")
    r = cluster.corral("logs", "-f", f"w2:{pid}")
    assert (r.status, r.out, r.err) == (0, "fine\n", f"corral: w2:{pid} exited 0\n")


def test_logs_follow_of_a_killed_program_exits_128_plus_the_signal(cluster: Cluster) -> None:
    pid = launch_one(cluster, "w1", "sh", "-c", "echo up; exec sleep 30")
    out_path, err_path = cluster.tmp / "killed.out", cluster.tmp / "killed.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        follower = subprocess.Popen(
            corral_argv("logs", "-f", f"w1:{pid}"),
            env=cluster.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        wait_for(lambda: out_path.read_bytes() == b"up\n", "the follower to print")
        assert cluster.corral("kill", f"w1:{pid}").status == 0
        assert follower.wait(20) == 128 + signal.SIGKILL
    finally:
        stop_process(follower)
    assert err_path.read_text() == f"corral: w1:{pid} killed by SIGKILL\n"


def test_logs_json_prints_each_piece_as_a_json_line(cluster: Cluster) -> None:
    import base64
    import json

    pid = launch_one(cluster, "w1", "sh", "-c", "echo one; echo two")
    wait_ended(cluster, f"w1:{pid}")
    r = cluster.corral("logs", f"w1:{pid}", "--json")
    assert r.status == 0, r.err
    (piece,) = [json.loads(line) for line in r.out.splitlines()]
    assert base64.b64decode(piece["data"]) == b"one\ntwo\n" and piece["eof"] is True
    assert piece["end"] == {"state": "exited", "reason": "exited 0", "exit_code": 0, "signal": None}

    r = cluster.corral("logs", "-f", "--tail", "all", f"w1:{pid}", "--json")
    assert r.status == 0, r.err
    pieces = [json.loads(line) for line in r.out.splitlines()]
    assert b"".join(base64.b64decode(p["data"]) for p in pieces) == b"one\ntwo\n"
    assert pieces[-1]["eof"] and pieces[-1]["end"]["reason"] == "exited 0"
