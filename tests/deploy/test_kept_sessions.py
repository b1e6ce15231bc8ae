"""Kept SSH connections (``[ssh] keep_open``) against a private sshd per test.

Logins are counted in the sshd's own log ("Accepted publickey"), and the
connection's server side is found as the sshd's descendant processes: a
kept connection is killed or frozen there, as a node restart or a hung
host would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from bench.cluster import wait_until
from corral.transport import sftp
from corral.transport.sftp import KEPT, SshTarget, Upload, push
from tests.deploy.sshd import Sshd, sshd_available, start_sshd


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not sshd_available():
        pytest.skip("OpenSSH server not installed; .ci/run installs openssh-server")
    with start_sshd(tmp_path) as server:
        yield server


@pytest.fixture
def target(own_sshd: Sshd) -> Iterator[SshTarget]:
    t = SshTarget(own_sshd.host, own_sshd.port, own_sshd.user, own_sshd.key, own_sshd.known_hosts)
    yield t
    KEPT.close_all()


def logins(sshd: Sshd) -> int:
    return sshd.log.read_text().count("Accepted publickey")


def sessions(sshd: Sshd, tmp_path: Path) -> list[psutil.Process]:
    """The sshd's per-connection processes (its descendants)."""
    listener = psutil.Process(int((tmp_path / "sshd" / "sshd.pid").read_text()))
    return listener.children(recursive=True)


def send(target: SshTarget, tmp_path: Path, name: str) -> Path:
    data = os.urandom(4096) + name.encode()
    local = tmp_path / "src" / name
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(data)
    remote = tmp_path / "dest" / name
    push(target, [Upload(local, str(remote), 0o644)])
    assert remote.read_bytes() == data
    return remote


def test_a_second_push_reuses_the_kept_connection(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    send(target, tmp_path, "a")
    assert KEPT.count(target) == 1
    send(target, tmp_path, "b")
    send(target, tmp_path, "c")
    assert logins(own_sshd) == 1
    assert KEPT.count(target) == 1


def test_keep_open_zero_logs_in_for_every_push_and_keeps_nothing(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    once = replace(target, keep_open=0.0)
    send(once, tmp_path, "a")
    send(once, tmp_path, "b")
    wait_until(lambda: logins(own_sshd) == 2, 10, "a second login")
    assert KEPT.count(once) == 0
    wait_until(lambda: not sessions(own_sshd, tmp_path), 10, "both connections to end")


def test_a_kept_connection_killed_on_the_node_is_replaced(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    send(target, tmp_path, "a")
    procs = sessions(own_sshd, tmp_path)
    assert procs
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=10)
    send(target, tmp_path, "b")  # the dead one is noticed, and a new one logs in
    wait_until(lambda: logins(own_sshd) == 2, 10, "a second login")


def test_a_frozen_kept_connection_costs_the_probe_then_a_new_login(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    quick = replace(target, stall=1.0)  # the probe waits min(PROBE_TIMEOUT, stall)
    send(quick, tmp_path, "a")
    frozen = sessions(own_sshd, tmp_path)
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        send(quick, tmp_path, "b")
        took = time.monotonic() - t0
        wait_until(lambda: logins(own_sshd) == 2, 10, "a second login")
        assert took >= 0.9  # it did wait on the frozen one first (the probe: 1 s)
    finally:
        for p in frozen:
            p.send_signal(signal.SIGCONT)


def test_an_idle_connection_is_closed_after_keep_open(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    brief = replace(target, keep_open=0.5)
    send(brief, tmp_path, "a")
    assert KEPT.count(brief) == 1 and sessions(own_sshd, tmp_path)
    wait_until(lambda: KEPT.count(brief) == 0, 10, "the reaper to close it")
    wait_until(lambda: not sessions(own_sshd, tmp_path), 10, "the node's side to end")
    send(brief, tmp_path, "b")
    wait_until(lambda: logins(own_sshd) == 2, 10, "a second login")


def test_an_edit_of_known_hosts_is_checked_on_a_new_connection(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    send(target, tmp_path, "a")
    saved = own_sshd.known_hosts.read_text()
    own_sshd.known_hosts.write_text("")  # the operator removed the node's key
    try:
        with pytest.raises(sftp.HostKeyError, match="unknown host key"):
            send(target, tmp_path, "b")
        assert not (tmp_path / "dest" / "b").exists()
    finally:
        own_sshd.known_hosts.write_text(saved)
    send(target, tmp_path, "c")


def test_a_push_that_failed_does_not_keep_its_connection(
    own_sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    local = tmp_path / "x"
    local.write_bytes(b"x")
    with pytest.raises(sftp.PushError):
        push(target, [Upload(local, "/proc/no/such/dir/x", 0o644)])
    assert KEPT.count(target) == 0
    wait_until(lambda: not sessions(own_sshd, tmp_path), 10, "the failed push's connection to end")
