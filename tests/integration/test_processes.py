"""Launch, observe and stop real programs on real workers through the master's API."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.cluster import LocalCluster, wait_until
from tests.procs import gone

pytestmark = pytest.mark.timeout(60)


def pid_of(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


def ended(p: dict) -> bool:
    return p["state"] in ("exited", "killed", "unknown")


def test_sleep_runs_on_two_workers(cluster: LocalCluster) -> None:
    res = cluster.call("POST", "/v1/launch", {"argv": ["sleep", "30"], "nodes": ["n1", "n2"]})
    assert res["errors"] == {}
    keys = sorted(p["key"] for p in res["procs"])
    assert [k.split(":")[0] for k in keys] == ["n1", "n2"]
    for key in keys:
        proc = psutil.Process(pid_of(key))
        # The reply comes before the exec (by design): wait for the program itself.
        wait_until(lambda p=proc: p.cmdline() == ["sleep", "30"], 10, f"{key} to exec")
        assert os.getpgid(proc.pid) == proc.pid  # its own process group (setsid)
        assert cluster.proc(key)["state"] in ("running", "sleeping")
        cluster.signal(key, "SIGKILL")


def test_exit_code_reported(cluster: LocalCluster) -> None:
    key = cluster.launch("n1", ["sh", "-c", "echo out; echo err >&2; exit 3"], app="exiter")
    p = cluster.wait_proc(key, ended)
    assert (p["state"], p["exit_code"], p["reason"]) == ("exited", 3, "exited 3")
    log = cluster.call("GET", f"/v1/logs?target={key}&tail=10")
    import base64

    assert base64.b64decode(log["data"]).decode().splitlines() == ["out", "err"]
    logs = list((cluster.worker_root("n1") / "apps" / "exiter" / "logs").glob("*.log"))
    assert len(logs) == 1 and logs[0].read_text() == "out\nerr\n"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_signal_reason(cluster: LocalCluster, sig: str) -> None:
    key = cluster.launch("n2", ["sleep", "60"])
    res = cluster.signal(key, sig)
    assert res["delivered"] is True
    p = cluster.wait_proc(key, ended)
    assert (p["state"], p["signal"]) == ("killed", sig)
    assert p["reason"].startswith(f"killed by {sig}")
    assert gone(pid_of(key))
    again = cluster.signal(key, sig)
    assert again["delivered"] is False and "already" in again["message"]


def test_segfault_reason(cluster: LocalCluster, tmp_path) -> None:
    src = tmp_path / "crash.c"
    src.write_text("int main(void){ volatile int *p = 0; return *p; }\n")
    exe = tmp_path / "crash"
    os.system(f"gcc -O0 -o {exe} {src}")
    key = cluster.launch("n1", [str(exe)], app="crash")
    p = cluster.wait_proc(key, ended)
    assert (p["state"], p["signal"]) == ("killed", "SIGSEGV")
    assert p["reason"].startswith("killed by SIGSEGV")


def test_max_rss_of_a_200mb_child(cluster: LocalCluster) -> None:
    code = textwrap.dedent(
        """
        b = bytearray(200 * 1024 * 1024)
        for i in range(0, len(b), 4096):
            b[i] = 1
        """
    )
    key = cluster.launch("n2", [sys.executable, "-c", code], app="hog")
    p = cluster.wait_proc(key, ended, timeout=30)
    assert p["state"] == "exited" and p["exit_code"] == 0
    assert p["max_rss"] >= 200 * 1024 * 1024
    usage = cluster.call("GET", "/v1/usage?node=n2")["nodes"][0]
    assert usage["children_max_rss"] >= 200 * 1024 * 1024
    mine = [q for q in usage["procs"] if q["pid"] == pid_of(key)]
    assert mine and mine[0]["max_rss"] >= 200 * 1024 * 1024


def test_unexecutable_program_is_an_error_not_a_process(cluster: LocalCluster) -> None:
    before = set(cluster.procs("n1"))
    res = cluster.call("POST", "/v1/launch", {"argv": ["/no/such/prog"], "nodes": ["n1"]})
    assert res["procs"] == []
    assert "No such file" in res["errors"]["n1"]
    assert set(cluster.procs("n1")) == before


def test_bad_input_changes_nothing(cluster: LocalCluster) -> None:
    import urllib.error

    for body, why in [
        ({"argv": ["true"], "nodes": ["ghost"]}, "unknown node: ghost"),
        ({"argv": ["true"], "nodes": ["n1"], "app": "../etc"}, "invalid app name"),
        ({"argv": [], "nodes": ["n1"]}, "nothing to launch"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as err:
            cluster.call("POST", "/v1/launch", body)
        assert why in err.value.read().decode()
    reply = cluster.call("POST", "/v1/signal", {"targets": ["n1:999999999"], "signal": "SIGINT"})
    assert reply["results"] == [
        {"target": "n1:999999999", "delivered": False, "message": "no such process: n1:999999999"}
    ]  # each target answers for itself; nothing was signalled
    assert not (cluster.worker_root("n1").parent / "etc").exists()


def test_processes_survive_a_killed_worker_and_are_readopted(cluster: LocalCluster) -> None:
    cluster.start_worker("phoenix")
    keep = cluster.launch("phoenix", ["sleep", "60"])
    doomed = cluster.launch("phoenix", ["sleep", "60"])
    cluster.workers["phoenix"].kill()  # kill -9 the daemon
    cluster.workers["phoenix"].wait()
    assert psutil.Process(pid_of(keep)).status() != "zombie"
    cluster.wait_node("phoenix", "lost")
    assert cluster.proc(keep)["state"] == "lost"
    os.kill(pid_of(doomed), 9)  # ends while nobody watches the worker
    wait_until(lambda: not psutil.pid_exists(pid_of(doomed)), 5, "the doomed sleep to go")
    cluster.start_worker("phoenix")  # same root: re-adopts
    p = cluster.wait_proc(keep, lambda p: p["state"] in ("running", "sleeping"))
    assert p["pid"] == pid_of(keep)
    gone = cluster.wait_proc(doomed, ended)
    assert gone["reason"]  # the shim recorded it even while the daemon was down
    assert cluster.signal(keep, "SIGINT")["delivered"]
    p = cluster.wait_proc(keep, ended)
    assert p["reason"] == "killed by SIGINT"


def test_stopped_worker_goes_suspect_then_lost_then_back(cluster: LocalCluster) -> None:
    cluster.start_worker("sleepy")
    key = cluster.launch("sleepy", ["sleep", "60"])
    daemon = cluster.workers["sleepy"]
    daemon.send_signal(19)  # SIGSTOP
    try:
        cluster.wait_node("sleepy", "suspect", timeout=5)
        cluster.wait_node("sleepy", "lost", timeout=5)
        events = cluster.call("GET", "/v1/events?limit=1000")["events"]
        lost = [e for e in events if e["node"] == "sleepy" and e["kind"] == "node.lost"][-1]
        last_beat = cluster.nodes()["sleepy"]["last_beat"]
        assert lost["ts"] - last_beat <= 2 * cluster.heartbeat * 1.1
    finally:
        daemon.send_signal(18)  # SIGCONT
    cluster.wait_node("sleepy", "alive")
    assert cluster.proc(key)["state"] in ("running", "sleeping")
    assert psutil.pid_exists(pid_of(key))
    cluster.signal(key, "SIGKILL")


@contextlib.contextmanager
def stranger(cluster: LocalCluster, name: str, root: Path, token: str) -> Iterator[None]:
    """A worker process the master should refuse, killed on the way out."""
    env = dict(os.environ, CORRAL_TOKEN=token)
    cmd = [sys.executable, "-m", "corral", "worker", "--master", cluster.listen]
    cmd += ["--name", name, "--root", str(root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def wait_event(cluster: LocalCluster, text: str, what: str) -> None:
    def seen() -> bool:
        events = cluster.call("GET", "/v1/events?limit=1000")["events"]
        return any(text in e["message"] for e in events)

    wait_until(seen, 10, what)


def test_second_worker_with_a_live_name_is_refused(cluster: LocalCluster) -> None:
    root = cluster.base / "dup-root"
    with stranger(cluster, "n1", root, cluster.token):
        wait_event(cluster, "already connected", "the duplicate to be refused")
        assert cluster.nodes()["n1"]["root"] != str(root)


def test_wrong_token_worker_executes_nothing(cluster: LocalCluster, tmp_path: Path) -> None:
    root = tmp_path / "rogue"
    with stranger(cluster, "rogue", root, "wrong"):
        wait_event(cluster, "wrong cluster token", "the rogue to be refused")
        assert "rogue" not in cluster.nodes()
        assert not list(root.glob("apps/*/logs/*.log"))


def test_small_program_max_rss_is_its_own_not_the_shims(cluster: LocalCluster) -> None:
    # At exec Linux folds the old address space's peak into ru_maxrss; the
    # program starts from a ~20 MB Python shim, whose peak must not be reported.
    key = cluster.launch("n1", ["sleep", "1.5"], app="small")
    cluster.wait_proc(key, lambda p: p["max_rss"] > 0)  # sampled by a heartbeat
    p = cluster.wait_proc(key, ended)
    assert p["state"] == "exited"
    own = psutil.Process().memory_info().rss  # any Python is far bigger than sleep
    assert 0 < p["max_rss"] < min(8 * 2**20, own)
