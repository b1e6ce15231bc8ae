"""Deploy, launch, logs, a job with a bundle, fetch and rm across separate hosts.

The master runs on host ``m``; workers ``w1`` and ``w2`` run on hosts of
their own (network namespaces joined by a bridge, `bench.netns.Lab`), each
beside a real OpenSSH sshd listening on its host's address, port 22.  The
master listens on every address, as it does by default; the workers dial
its host's address, so its certificate must name that IP.  Each worker
advertises the address it reaches the master from, which is where deploy,
bundles and fetch connect over SSH.  The CLI runs on the master's host.
Nothing between the hosts goes through 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.netns import Lab, available
from tests.cli.conftest import REPO, base_env, corral_argv, stop_process, wait_for
from tests.cli.test_netns import Hosts, _read
from tests.deploy.build import hello_app
from tests.deploy.sshd import sshd_available, start_sshd
from tests.deploy.test_bundles import make_bundle

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(bool(available()), reason=available() or "ok"),
    pytest.mark.skipif(not sshd_available(), reason="OpenSSH sshd is not installed"),
]

WORKERS = ("w1", "w2")
STALL = 2  # seconds a transfer may make no progress (ssh.stall_timeout)


class Cluster(Hosts):
    """`Hosts` with two workers, and the CLI's answers as JSON."""

    def ok(self, *args: str) -> str:
        done = self.corral(*args)
        assert done.returncode == 0, f"corral {' '.join(args)}: {done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def root(self, node: str) -> Path:
        return self.tmp / node


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Cluster]:
    lab = Lab(net=81)
    lab.start()
    c = Cluster(lab, tmp_path)
    with contextlib.ExitStack() as sshds:
        try:
            master_ip = lab.add("m")
            servers = []
            for node in WORKERS:
                ip = lab.add(node)
                wrap = functools.partial(lab.run_in, node)
                servers.append(
                    sshds.enter_context(start_sshd(tmp_path / node, address=ip, port=22, wrap=wrap))
                )
            # One client key for every node, as an operator has; each host's key is known.
            key = servers[0].key
            for s in servers[1:]:
                authorized = s.key.parent / "authorized_keys"
                authorized.write_text(Path(f"{key}.pub").read_text())
            c.state.mkdir()
            ssh = f'[ssh]\nuser = "{servers[0].user}"\nkey = "{key}"\nstall_timeout = {STALL}\n'
            (c.state / "config.toml").write_text(ssh)
            (c.state / "known_hosts").write_text("".join(s.host_key_line + "\n" for s in servers))
            # Every address, as by default: its certificate names this host's own.
            listen_on = ["--listen", "0.0.0.0:0", "--api", "127.0.0.1:0"]
            c.spawn("m", "master.log", "master", "--headless", *listen_on,
                    "--state-dir", str(c.state), "--heartbeat", "0.5")  # fmt: skip
            port = wait_for(lambda: _read(c.state / "listen"), "the master's port").rpartition(":")[
                2
            ]
            listen = f"{master_ip}:{port}"
            token = (c.state / "token").read_text().strip()
            for node in WORKERS:
                c.spawn(node, f"{node}.log", "worker", "--master", listen, "--name", node,
                        "--root", str(c.root(node)), "--mem", "1G", CORRAL_TOKEN=token)  # fmt: skip
            for node in WORKERS:
                wait_for(lambda n=node: c.state_of(n) == "alive", f"{node} to join")
            yield c
        finally:
            for proc in reversed(c.procs):
                stop_process(proc)
            # The sshds and their sessions first: _kill_left's pattern matches a
            # listener's command line, and a listener killed by it leaves its
            # sessions (one cut off mid-upload waits on TCP) to init.
            sshds.close()
            _kill_left(tmp_path)
            lab.close()


def _kill_left(tmp: Path) -> None:
    """Whatever still runs in a worker's directories (a test that failed half-way)."""
    for node in WORKERS:
        subprocess.run(["pkill", "-9", "-f", str(tmp / node)], check=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deploy_launch_logs_job_fetch_and_rm_between_hosts(hosts: Cluster, tmp_path: Path) -> None:
    c = hosts
    nodes = {n["name"]: n for n in c.json("nodes")["nodes"]}
    for node in WORKERS:
        assert nodes[node]["address"].rsplit(":", 1)[0] == c.lab.hosts[node], nodes[node]
        assert nodes[node]["cert_expires"], nodes[node]  # enrolled over mutual TLS

    # Deploy: the program and its non-system library, over SFTP to each host's sshd.
    exe, lib = hello_app(tmp_path / "build")
    out = c.ok("deploy", str(exe), "--all")
    for node in WORKERS:
        app = c.root(node) / "apps" / "hello"
        assert _sha256(app / "bin" / "hello") == _sha256(exe), out
        assert _sha256(app / "lib" / "libgreet.so") == _sha256(lib), out

    # Launch it on both hosts; each log holds what the program printed there.
    launched = c.ok("launch", "--all", "--", "hello").split()
    assert sorted(t.partition(":")[0] for t in launched) == sorted(WORKERS), launched
    for target in launched:
        wait_for(
            lambda t=target: "hello from libgreet" in c.corral("logs", t).stdout,
            f"{target}'s output in its log",
        )

    # A job whose bundle is built with make on each host, then fetched home.
    archive = make_bundle(tmp_path, "app")
    job = c.ok("submit", "--bundle", str(archive), "--replicas", "2", "--spread",
               "--app", "mk", "--output", "hello", "--", "make", "run").strip()  # fmt: skip
    ticket = wait_for(
        lambda: (t := c.json("job", job))["state"] in ("succeeded", "failed", "cancelled") and t,
        f"job {job} to end",
        60,
    )
    assert ticket["state"] == "succeeded", ticket["reason"]
    assert {r["node"] for r in ticket["replicas"]} == set(WORKERS)
    dest = tmp_path / "results"
    c.ok("fetch", job, "--to", str(dest))
    for r in ticket["replicas"]:
        here = dest / job / f"{r['index']}-{r['node']}"
        there = c.root(r["node"]) / "apps" / "mk" / "jobs" / job / str(r["index"])
        assert f"hello from {there}" in (here / f"{r['launch']}.log").read_text()
        assert (here / "hello").read_bytes() == (there / "hello").read_bytes()

    # rm takes the app away from every host.
    c.ok("rm", "hello", "--all")
    for node in WORKERS:
        assert not (c.root(node) / "apps" / "hello" / "bin" / "hello").exists()


def test_a_deploy_cut_off_mid_transfer_fails_in_seconds_and_the_next_one_cleans_up(
    hosts: Cluster, tmp_path: Path
) -> None:
    """The node goes silent (packets dropped, no reset) while its file is on the way."""
    c = hosts
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.write(b"#!/bin/sh\necho big\n")
        for _ in range(24):  # 384 MiB: a few seconds on the bridge
            f.write(os.urandom(16 << 20))
    big.chmod(0o755)
    bin_dir = c.root("w1") / "apps" / "big" / "bin"
    deploy = subprocess.Popen(
        c.lab.run_in("m", corral_argv("deploy", str(big), "--node", "w1")),
        env=base_env(CORRAL_STATE_DIR=str(c.state)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: any(p.stat().st_size > 0 for p in bin_dir.glob(".big.corral-tmp-*")),
            "the file to be on its way",
            30,
        )
        c.lab.cut("w1")
        cut = time.monotonic()
        out, err = deploy.communicate(timeout=60)
        took = time.monotonic() - cut
    finally:
        c.lab.heal("w1")
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    assert deploy.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("corral: deploy big to w1: "), err
    assert f"for {STALL} s" in lines[0], err  # no progress, or nothing acknowledged
    assert took < 10 * STALL, took  # not TCP's many minutes
    assert not (bin_dir / "big").exists()  # whole under its name, or absent
    # The part sent stays on the node (nobody could reach it to remove it) ...
    (left,) = bin_dir.glob(".big.corral-tmp-*")
    left_size = left.stat().st_size
    dead_since = time.time() - 2 * STALL - 1  # no write for two stall timeouts: dead
    os.utime(left, (dead_since, dead_since))
    # Healed, and back, the same deploy goes through.
    wait_for(lambda: c.state_of("w1") == "alive", "w1 back after the heal", 20)
    c.ok("deploy", str(big), "--node", "w1")
    assert _sha256(bin_dir / "big") == _sha256(big)
    # ... until that next deploy, which removes it and says so in the event log.
    assert not left.exists()
    assert list(bin_dir.glob(".big.corral-tmp-*")) == []
    events = (c.state / "events.log").read_text()
    assert f"removed big/bin/{left.name} ({left_size} bytes)" in events, events[-2000:]
