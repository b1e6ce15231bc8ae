"""`corral demo` with sshd installed: its own sshd, deploys that work as they are, and a
dry run that logs in to each node's sshd and names the one it cannot reach."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import demo_sshd
from tests.cli.conftest import (
    closed_port,
    corral_argv,
    pid_gone,
    run_corral,
    stop_process,
    wait_for,
)
from tests.cli.test_demo import Lines, headless_demo, home_env


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    if demo_sshd.find_sshd() is None:
        pytest.skip("OpenSSH server not installed; .ci/run installs openssh-server")
    with headless_demo(tmp_path) as running:
        yield running


def test_the_demo_runs_its_own_sshd_and_deploy_works_on_every_node(
    tmp_path: Path, demo: tuple[subprocess.Popen[str], Lines]
) -> None:
    proc, lines = demo
    (sshd,) = lines.wait(r"sshd for deploys on 127\.0\.0\.1:(\d+) \(user (\S+), key (\S+)\)")
    port, user = int(sshd.group(1)), sshd.group(2)
    (state_line,) = lines.wait(r"state in (\S+)")
    state = Path(state_line.group(1))
    lines.wait(r"node\.joined\s+(node\d) joined", count=2)
    sshd_pid = int((state.parent / "sshd" / "sshd.pid").read_text())

    # The master's [ssh] config names the demo's user and key; known_hosts trusts its host key.
    ssh = tomllib.loads((state / "config.toml").read_text())["ssh"]
    assert ssh["user"] == user and ssh["key"] == sshd.group(3)
    assert (state / "known_hosts").read_text().startswith(f"[127.0.0.1]:{port} ")
    env = home_env(tmp_path)  # another shell, nothing set
    nodes = run_corral("nodes", "--json", env=env).json()["nodes"]
    assert {(n["name"], n["ssh_host"], n["ssh_port"]) for n in nodes} == {
        ("node1", "127.0.0.1", port),
        ("node2", "127.0.0.1", port),
    }

    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the demo\n")
    script.chmod(0o755)
    r = run_corral("deploy", str(script), "--all", env=env)
    assert r.status == 0, r.err
    assert "node1: sent 1 (" in r.out and "node2: sent 1 (" in r.out
    for node in ("node1", "node2"):
        copy = state.parent / node / "apps" / "hello.sh" / "bin" / "hello.sh"
        assert copy.read_bytes() == script.read_bytes()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    lines.wait(r"corral demo: stopped 2 workers")
    assert pid_gone(sshd_pid)
    assert not state.parent.exists()


def test_a_dry_run_logs_in_to_each_node_and_names_the_one_it_cannot_reach(
    tmp_path: Path, demo: tuple[subprocess.Popen[str], Lines]
) -> None:
    _, lines = demo
    (sshd,) = lines.wait(r"sshd for deploys on 127\.0\.0\.1:(\d+) \(user (\S+),")
    port, user = int(sshd.group(1)), sshd.group(2)
    (state_line,) = lines.wait(r"state in (\S+)")
    state = Path(state_line.group(1))
    lines.wait(r"node\.joined\s+(node\d) joined", count=2)

    # A third node joins the demo advertising an sshd port where nothing listens.
    nowhere = closed_port()
    odd_root = tmp_path / "odd"
    token = (state / "token").read_text().strip()
    listen = (state / "listen").read_text().strip()
    with open(tmp_path / "odd.log", "wb") as log:
        odd = subprocess.Popen(
            corral_argv(
                *("worker", "--master", listen, "--name", "odd", "--root", str(odd_root)),
                *("--ssh-host", "127.0.0.1", "--ssh-port", str(nowhere)),
            ),
            env={**home_env(tmp_path), "CORRAL_TOKEN": token},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        lines.wait(r"node\.joined\s+odd joined")
        script = tmp_path / "hello.sh"
        script.write_text("#!/bin/sh\necho hello\n")
        script.chmod(0o755)
        r = run_corral("deploy", str(script), "--all", "--dry-run", env=home_env(tmp_path))
        assert r.status == 1
        where = f"{user}@127.0.0.1:{nowhere}"
        assert r.err.startswith(f"corral: deploy hello.sh to odd: cannot reach sshd at {where}: ")
        assert r.err.count("\n") == 1, r.err  # one line, for the one node it could not reach
        for node in ("node1", "node2"):
            assert f"{node}: would send 1 (" in r.out
        assert r.out.count(f"  ssh        {user}@127.0.0.1:{port}: logged in, nothing written") == 2
        # Nothing was written anywhere: no app dir on any node.
        for root in (state.parent / "node1", state.parent / "node2", odd_root):
            assert not (root / "apps" / "hello.sh").exists()
    finally:
        stop_process(odd)
        with contextlib.suppress(FileNotFoundError):
            assert not any((odd_root / "run").glob("*.json"))


def test_the_ssh_table_reads_back_as_written(tmp_path: Path) -> None:
    from corral.master.config import SshConfig, load_ssh, ssh_table

    odd = tmp_path / 'dir with "quotes" and ü'
    written = SshConfig("me", odd / "known_hosts", odd / "key", None, True)
    (tmp_path / "config.toml").write_text(ssh_table(written))
    assert load_ssh(tmp_path) == written
    with_port = SshConfig("me", tmp_path / "kh", None, 2222)
    (tmp_path / "config.toml").write_text(ssh_table(with_port))
    assert load_ssh(tmp_path) == with_port


def test_no_sshd_outlives_a_killed_demo(demo: tuple[subprocess.Popen[str], Lines]) -> None:
    proc, lines = demo
    (state,) = lines.wait(r"state in (\S+)")
    workers = [int(m.group(1)) for m in lines.wait(r"started worker node\d \(pid (\d+)", 2)]
    sshd_pid = int((Path(state.group(1)).parent / "sshd" / "sshd.pid").read_text())
    try:
        proc.kill()  # no cleanup at all
        proc.wait()
        wait_for(lambda: pid_gone(sshd_pid), "the demo's sshd to end with it")
    finally:
        for pid in workers:  # a killed demo leaves its workers (they run in their own sessions)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: all(pid_gone(p) for p in workers), "the workers to end")
        shutil.rmtree(Path(state.group(1)).parent, ignore_errors=True)
