"""A silent network cut between real hosts (network namespaces), and its heal.

The master runs on one host, a worker on another, joined by a bridge.  The
cut drops packets without a word (`bench.netns.Lab.cut`): no FIN, no RST,
no ICMP.  Both sides must notice the silence on their own, a command to the
cut node must be refused at once, and after the heal the node must be back
and answering, its program never relaunched.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.netns import Lab, available
from tests.cli.conftest import REPO, base_env, corral_argv, pid_gone, stop_process, wait_for

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(bool(available()), reason=available() or "ok"),
]

H = 0.5


class Hosts:
    """A master on host ``m`` and a worker ``w1`` on its own host."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.state = tmp / "state"
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, host: str, log: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(
                self.lab.run_in(host, corral_argv(*args)),
                env=base_env(**env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def corral(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.lab.run_in("m", corral_argv(*args)),
            env=base_env(CORRAL_STATE_DIR=str(self.state)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def state_of(self, node: str) -> str:
        r = self.corral("nodes", "--json")
        if r.returncode != 0:
            return ""
        return next((n["state"] for n in json.loads(r.stdout)["nodes"] if n["name"] == node), "")

    def log(self, name: str) -> str:
        return (self.tmp / name).read_text(errors="replace")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    lab = Lab(net=79)
    lab.start()
    h = Hosts(lab, tmp_path)
    try:
        master_ip = lab.add("m")
        lab.add("w1")
        h.spawn(
            "m",
            "master.log",
            "master",
            "--headless",
            "--listen",
            f"{master_ip}:0",
            "--api",
            "127.0.0.1:0",
            "--state-dir",
            str(h.state),
            "--heartbeat",
            str(H),
        )
        listen = wait_for(lambda: _read(h.state / "listen"), "the master's address")
        token = (h.state / "token").read_text().strip()
        h.spawn("w1", "w1.log", "worker", "--master", listen, "--name", "w1",
                "--root", str(tmp_path / "w1"), CORRAL_TOKEN=token)  # fmt: skip
        wait_for(lambda: h.state_of("w1") == "alive", "w1 to join")
        yield h
    finally:
        for proc in reversed(h.procs):
            stop_process(proc)
        lab.close()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def test_a_silent_cut_is_noticed_on_both_sides_and_healed(hosts: Hosts) -> None:
    h = hosts
    r = h.corral("launch", "--node", "w1", "--", "sleep", "300")
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.strip().rpartition(":")[2])
    h.lab.cut("w1")
    try:
        wait_for(lambda: h.state_of("w1") == "lost", "the master to call w1 lost", 10)
        wait_for(lambda: "no word from the master" in h.log("w1.log"), "w1 to notice", 10)
        refused = h.corral("stop", f"w1:{pid}")
        assert refused.returncode == 1
        assert "w1 is lost (no heartbeat for" in refused.stderr, refused.stderr
    finally:
        h.lab.heal("w1")
    wait_for(lambda: h.state_of("w1") == "alive", "w1 to come back after the heal", 10)
    ps = h.corral("ps", "--node", "w1", "--json")
    assert [p["pid"] for p in json.loads(ps.stdout)["procs"]] == [pid]  # resynced, not relaunched
    assert not pid_gone(pid)  # the stop refused during the cut never ran
    stopped = h.corral("stop", f"w1:{pid}")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: pid_gone(pid), "the stop after the heal to land")
