"""The command line's whole cost, start-up included, beside what an operator's ssh costs.

Setup: a real master, 3 real workers and a private sshd on loopback (the
tests' fixture), one OpenSSH ControlMaster connection open to it.  Each
figure is the median wall time of the whole ``corral`` command, as a
shell runs it, with its own CPU (user + sys) beside it; rounds interleave
the commands, so a busy machine slows all of them alike.  References in
the same run: ``python -c pass`` in the same venv, and ``ssh`` over the
open connection (one command, or three at once for three nodes).

The package is byte-compiled first: a user's install has its .pyc files
(``PYTHONDONTWRITEBYTECODE``, set in some shells, would otherwise make
every run compile the sources).
"""

from __future__ import annotations

import compileall
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.cluster import LocalCluster
from bench.report import line, median
from bench.sshmux import control_master, rsync_e

ROUNDS = 25
WORKERS = ("w1", "w2", "w3")
ROOT = Path(__file__).resolve().parents[1]
CORRAL = str(Path(sys.executable).with_name("corral"))


class Timed:
    """Median wall and CPU seconds of one kind of command."""

    def __init__(self) -> None:
        self.walls: list[float] = []
        self.cpus: list[float] = []

    def run(self, start: Callable[[], list[subprocess.Popen[bytes]]]) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        procs = start()
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"{p.args!r} failed with status {p.returncode}")
        self.walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    @property
    def ms(self) -> float:
        return median(self.walls) * 1000

    @property
    def cpu_ms(self) -> float:
        return median(self.cpus) * 1000


def _spawn(*argv: str, env: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    out = subprocess.DEVNULL
    return [subprocess.Popen(argv, stdout=out, stderr=out, stdin=out, env=env)]


def _compile() -> None:
    for d in ("corral", "master", "transport", "daemon", "tui"):  # the links are not followed
        compileall.compile_dir(ROOT / d, quiet=2)


def run() -> list[str]:
    from tests.deploy.sshd import sshd_available, start_sshd

    if not sshd_available() or not shutil.which("ssh"):
        return ["[SKIP] cli_start: OpenSSH (sshd and ssh) not installed"]
    _compile()
    with tempfile.TemporaryDirectory(prefix="corral-bench-cli-", dir="/tmp") as tmp:
        base = Path(tmp)
        with start_sshd(base / "sshd") as sshd:
            cluster = LocalCluster(base / "c")
            cluster.use_sshd(sshd)
            try:
                cluster.start_master()
                for name in WORKERS:
                    cluster.start_worker(name, extra_args=["--ssh-port", str(sshd.port)])
                with control_master(sshd, base) as ssh:
                    return _measure(cluster, ssh, base)
            finally:
                cluster.stop()


def _measure(cluster: LocalCluster, ssh: list[str], base: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["CORRAL_STATE_DIR"] = str(cluster.state)
    app = base / "app"
    app.mkdir()
    tool = app / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    data = app / "libdata.so"
    data.write_bytes(os.urandom(2**20))
    deploy = [CORRAL, "deploy", str(tool), "--lib", str(data), "--all"]
    subprocess.run(deploy, env=env, check=True, capture_output=True, timeout=120)
    dests = [base / "rsync" / n for n in WORKERS]
    for d in dests:
        d.mkdir(parents=True)  # the "nodes" are this machine
    e, where = rsync_e(ssh)
    rsync = [["rsync", "-a", "-e", e, str(tool), str(data), f"{where}:{d}/"] for d in dests]
    for cmd in rsync:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    t = {k: Timed() for k in ("py", "ssh", "ssh3", "nodes", "launch", "redeploy", "rsync")}
    t |= {"stop": Timed(), "ssh_stop": Timed()}
    stop_ref = "sleep 60 & p=$!; kill -INT $p; wait $p; echo $?"
    for _ in range(ROUNDS):
        t["py"].run(lambda: _spawn(sys.executable, "-c", "pass"))
        t["ssh"].run(lambda: _spawn(*ssh, "true"))
        t["ssh3"].run(lambda: [p for _ in WORKERS for p in _spawn(*ssh, "true")])
        t["nodes"].run(lambda: _spawn(CORRAL, "nodes", env=env))
        t["launch"].run(lambda: _spawn(CORRAL, "launch", "--all", "--", "true", env=env))
        t["redeploy"].run(lambda: _spawn(*deploy, env=env))
        t["rsync"].run(lambda: [p for cmd in rsync for p in _spawn(*cmd)])
        key = cluster.launch("w1", ["sleep", "60"])
        t["stop"].run(lambda k=key: _spawn(CORRAL, "stop", "--wait", k, env=env))  # type: ignore[misc]
        t["ssh_stop"].run(lambda: _spawn(*ssh, stop_ref))
    py, one, three = t["py"].ms, t["ssh"].ms, t["ssh3"].ms

    def row(name: str, k: str, ref: str, ref_ms: float, limit: float) -> str:
        fig = f"{t[k].ms:.1f} ms median ({t[k].cpu_ms:.1f} ms CPU)"
        ok = t[k].ms <= limit and t[k].ms < ref_ms
        return line(name, fig, ref, f"<= {limit:.0f} ms and below the ssh/rsync figure", ok)

    refs = f"python -c pass {py:.1f} ms ({t['py'].cpu_ms:.1f} ms CPU); "
    return [
        row("corral nodes (3 workers)", "nodes", refs + f"ssh true, open {one:.1f} ms", one, 35),
        row(
            "corral launch --all -- true (3 workers)",
            "launch",
            refs + f"3 ssh true at once, open {three:.1f} ms",
            three,
            40,
        ),
        row(
            "corral stop --wait (SIGINT, how it ended)",
            "stop",
            refs + f"ssh 'kill -INT; wait', open {t['ssh_stop'].ms:.1f} ms",
            t["ssh_stop"].ms,
            50,
        ),
        row(
            "corral deploy unchanged, 3 workers (1 MiB app)",
            "redeploy",
            refs + f"3 rsync -a at once, open connection {t['rsync'].ms:.1f} ms",
            t["rsync"].ms,
            50,
        ),
    ]
