"""Standby masters on etcd, on separate hosts, when the leader is cut off.

etcd, masters ``m1`` and ``m2`` and worker ``w1`` each run on a host of
their own (network namespaces joined by a bridge, `bench.netns.Lab`).  The
masters share one CA and token, as the README asks.  The cut drops every
packet to and from ``m1`` without a word: ``m2`` must take the lead, the
worker must find it, the programs must run on, never launched twice, and
``m1``, healed, must act no more (a standby that forwards).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.ha import etcd_binary
from bench.netns import Lab, available
from tests.cli.conftest import (
    REPO,
    base_env,
    corral_argv,
    kill_launched,
    pid_gone,
    stop_process,
    wait_for,
)
from tests.cli.test_netns import _read

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(bool(available()), reason=available() or "ok"),
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
]

H = 0.5
LEASE = 2
PORT, API_PORT = 7070, 7071  # every host has its own ports: the defaults on each


class Hosts:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, host: str, log: str, argv: list[str], **env: str) -> None:
        with open(self.tmp / log, "ab") as out:
            self.procs.append(
                subprocess.Popen(
                    self.lab.run_in(host, argv),
                    env=base_env(**env),
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    def state(self, master: str) -> Path:
        return self.tmp / f"state-{master}"

    def corral(self, master: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI on ``master``'s host, talking to that master."""
        return subprocess.run(
            self.lab.run_in(master, corral_argv(*args)),
            env=base_env(CORRAL_STATE_DIR=str(self.state(master))),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def json(self, master: str, *args: str) -> Any:
        done = self.corral(master, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def roles(self, master: str) -> dict[str, str]:
        done = self.corral(master, "masters", "--json")
        if done.returncode != 0:
            return {}
        return {m["name"]: m["role"] for m in json.loads(done.stdout)["masters"]}

    def node_state(self, master: str) -> str:
        done = self.corral(master, "nodes", "--json")
        if done.returncode != 0:
            return ""
        return next((n["state"] for n in json.loads(done.stdout)["nodes"]), "")

    def log(self, name: str) -> str:
        return (self.tmp / name).read_text(errors="replace")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    lab = Lab(net=82)
    lab.start()
    h = Hosts(lab, tmp_path)
    try:
        etcd_ip = lab.add("etcd")
        ips = {m: lab.add(m) for m in ("m1", "m2")}
        lab.add("w1")
        client, peer = f"http://{etcd_ip}:2379", f"http://{etcd_ip}:2380"
        etcd = [str(etcd_binary()), "--name", "e", "--data-dir", str(tmp_path / "etcd-data")]
        etcd += ["--listen-client-urls", client, "--advertise-client-urls", client]
        etcd += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        etcd += ["--initial-cluster", f"e={peer}", "--log-level", "warn"]
        h.spawn("etcd", "etcd.log", etcd)
        for name in ("m1", "m2"):
            state = h.state(name)
            state.mkdir()
            if name == "m2":  # one CA and one token for the cluster's masters
                (state / "tls").symlink_to(h.state("m1") / "tls")
                shutil.copy(h.state("m1") / "token", state / "token")
                (state / "token").chmod(0o600)
            h.spawn(name, f"{name}.log", corral_argv(
                "master", "--headless", "--name", name, "--listen", f"0.0.0.0:{PORT}",
                "--api", f"0.0.0.0:{API_PORT}", "--state-dir", str(state), "--heartbeat", str(H),
                "--etcd", client, "--lease", str(LEASE),
            ))  # fmt: skip
            # etcd may still be starting: the master retries until it answers.
            wait_for(lambda s=state: _read(s / "api"), f"{name}'s API", 30)
        wait_for(lambda: h.roles("m1").get("m1") == "leader", "m1 to lead", 30)
        token = _read(h.state("m1") / "token")
        # Only the standby's address: it sends the worker on to the leader's.
        masters = f"{ips['m2']}:{PORT}"
        h.spawn("w1", "w1.log", corral_argv(
            "worker", "--master", masters, "--name", "w1", "--root", str(tmp_path / "w1"),
            "--mem", "64M",
        ), CORRAL_TOKEN=token)  # fmt: skip
        wait_for(lambda: h.node_state("m1") == "alive", "w1 at m1", 20)
        yield h
    finally:
        for proc in reversed(h.procs):
            stop_process(proc)
        subprocess.run(["pkill", "-9", "-f", str(tmp_path / "w1")], check=False)
        kill_launched([tmp_path / "w1"])  # its programs: pkill -f does not match `sleep 300`
        lab.close()


def test_the_leader_cut_off_hands_over_and_acts_no_more_once_healed(hosts: Hosts) -> None:
    h = hosts
    launched = h.corral("m1", "launch", "--node", "w1", "--", "sleep", "300")
    assert launched.returncode == 0, launched.stderr
    pid = int(launched.stdout.strip().rpartition(":")[2])
    submitted = h.corral("m1", "submit", "--mem", "32M", "--", "sleep", "300")
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    replica = wait_for(
        lambda: (t := h.json("m1", "job", job))["state"] == "running" and t["replicas"][0]["pid"],
        f"job {job} to run",
    )

    h.lab.cut("m1")
    try:
        wait_for(lambda: h.roles("m2").get("m2") == "leader", "m2 to lead", 30)
        wait_for(lambda: h.node_state("m2") == "alive", "w1 to come to m2", 30)
        procs = h.json("m2", "ps", "--node", "w1")["procs"]
        assert sorted(p["pid"] for p in procs) == sorted([pid, replica])  # none launched twice
        ticket = h.json("m2", "job", job)
        assert ticket["state"] == "running" and ticket["replicas"][0]["pid"] == replica
        # m2 acts: a launch through it runs on w1.
        again = h.corral("m2", "launch", "--node", "w1", "--", "sleep", "301")
        assert again.returncode == 0, again.stderr
        second = int(again.stdout.strip().rpartition(":")[2])
        assert not pid_gone(second)
    finally:
        h.lab.heal("m1")

    # Healed, m1 leads no more: a standby, it hands a launch on to m2 once it
    # hears etcd again (until then it refuses, and starts nothing).
    refusals: list[str] = []

    def forwarded() -> bool:
        done = h.corral("m1", "launch", "--node", "w1", "--", "sleep", "302")
        if done.returncode != 0:
            refusals.append(done.stderr.strip())
        return done.returncode == 0

    wait_for(forwarded, "a launch through m1, carried out by m2", 30)
    assert all(r.startswith("corral: not acting: etcd is unreachable") for r in refusals), refusals
    assert h.roles("m1") == {"m1": "standby", "m2": "leader"}
    # Both listen on every address; each advertises the one the others reach it at.
    for m in h.json("m1", "masters")["masters"]:
        ip = h.lab.hosts[m["name"]]
        assert (m["address"], m["api"]) == (f"{ip}:{PORT}", f"{ip}:{API_PORT}"), m
    procs = h.json("m2", "ps", "--node", "w1")["procs"]
    assert len(procs) == 4 and not any(pid_gone(p["pid"]) for p in procs), procs
    assert h.node_state("m2") == "alive"
