"""Job bundles: a 100 MB bundle to 8 replicas on 4 workers, beside scp + ssh tar xf.

Setup: a private sshd on 127.0.0.1 (the tests' fixture), a real master and
4 real workers advertising it, each offering 200M to jobs so a job of 8
replicas asking 100M each is placed 2 a node.  The bundle is a plain tar
of 100 MB of random bytes (4 files of 25 MB): nothing to gain from
compression on either side.

(a) submit to all 8 running: the wall time from ``POST /v1/jobs`` until
    every replica has a process, which covers hashing the bundle into the
    master's state dir, sending it to each node once over SFTP, the
    worker's hash check, 8 unpacks (2 a node) and 8 launches.  The bundle's
    content changes each round (nothing cached).  The master keeps its SSH
    connections open between rounds (``[ssh] keep_open``): the first round
    opens them, and its time is printed beside the median.  Beside it, in the same
    run: 4 sequential ``scp`` of the same file to the same sshd, each
    followed by ``ssh ... tar xf`` into a directory of its own.  CPU is
    reported beside each (utime+stime: master, workers and the sshd's
    sessions; scp, ssh and the sshd's sessions), as wall time on a shared
    machine moves with the load.
(b) the same bundle submitted again: the ``sending`` step of each
    replica (the node is asked, holds it, nothing is sent), per node.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.cluster import LocalCluster, wait_until
from bench.report import line, median
from tests.deploy.sshd import Sshd, sshd_available, start_sshd

MiB = 2**20
FILES = 4
FILE_SIZE = 25 * MiB
WORKERS = 4
REPLICAS = 8
ROUNDS = 5
AGAIN_RUNS = 5


def _bundle(base: Path, round_no: int) -> Path:
    src = base / f"src{round_no}"
    src.mkdir()
    for i in range(FILES):
        with (src / f"data{i}.bin").open("wb") as f:
            for _ in range(FILE_SIZE // MiB):
                f.write(os.urandom(MiB))
    archive = base / f"bundle{round_no}.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "."], check=True)
    shutil.rmtree(src)
    return archive


def _ssh_opts(sshd: Sshd) -> list[str]:
    return [
        "-i", str(sshd.key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
    ]  # fmt: skip


def _reference(sshd: Sshd, archive: Path, base: Path) -> float:
    """4 sequential scp + ssh tar xf of ``archive``, each into a directory of its own."""
    t0 = time.monotonic()
    for i in range(WORKERS):
        dest = base / "ref" / f"n{i}"
        dest.mkdir(parents=True)
        scp = ["scp", "-q", "-P", str(sshd.port), *_ssh_opts(sshd)]
        subprocess.run([*scp, str(archive), f"{sshd.user}@{sshd.host}:{dest}/"], check=True)
        ssh = ["ssh", "-p", str(sshd.port), *_ssh_opts(sshd), f"{sshd.user}@{sshd.host}"]
        subprocess.run(
            [*ssh, f"mkdir {dest}/x && tar xf {dest}/{archive.name} -C {dest}/x"], check=True
        )
    seconds = time.monotonic() - t0
    shutil.rmtree(base / "ref")
    return seconds


def _cpu(pids: list[int]) -> float:
    """CPU seconds of ``pids`` and of all their descendants, live or reaped: the
    master keeps its SSH connections open between rounds, so their sshd
    sessions live on and count here, not only once reaped."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
    return total


def _sshd_pids() -> list[int]:
    """The private sshd (our child): its per-connection children's CPU lands in its own."""
    return [p.pid for p in psutil.Process().children() if p.name() == "sshd"]


def _clients_cpu() -> float:
    """CPU of this process's reaped children: the reference's scp and ssh clients."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _running(cluster: LocalCluster, job: int) -> dict[str, Any]:
    t: dict[str, Any] = cluster.call("GET", f"/v1/jobs/{job}")
    if t["state"] == "failed":
        raise RuntimeError(f"job {job} failed: {t['reason']}")
    return t if t["running"] == REPLICAS else {}


def _submit(cluster: LocalCluster, archive: Path, app: str) -> tuple[float, dict[str, Any]]:
    body = {
        "argv": ["sleep", "600"], "replicas": REPLICAS, "mem": 100 * MiB,
        "app": app, "bundle": str(archive),
    }  # fmt: skip
    t0 = time.monotonic()
    job = cluster.call("POST", "/v1/jobs", body, timeout=120)["id"]
    ticket = wait_until(lambda: _running(cluster, job), 120, f"job {job} to run")
    seconds = time.monotonic() - t0
    cluster.call("DELETE", f"/v1/jobs/{job}")
    return seconds, ticket


def _clean(cluster: LocalCluster, app: str, names: list[str]) -> None:
    """Wait for the cancelled replicas to end, then drop the app's job directories."""
    wait_until(
        lambda: all(p["state"] not in ("running", "sleeping") for p in cluster.procs().values()),
        30,
        "the replicas to end",
    )
    cluster.call("POST", "/v1/rm", {"app": app, "nodes": names, "force": True})


def run() -> list[str]:
    if not sshd_available() or not shutil.which("scp"):
        return ["[SKIP] bundle: OpenSSH server or scp not installed"]
    with tempfile.TemporaryDirectory(prefix="corral-bench-bundle-") as tmp:
        base = Path(tmp)
        with start_sshd(base) as sshd:
            cluster = LocalCluster(base / "cluster")
            cluster.use_sshd(sshd)
            try:
                cluster.start_master()
                names = [f"w{i}" for i in range(1, WORKERS + 1)]
                for name in names:
                    args = ["--ssh-port", str(sshd.port), "--mem", "200M"]
                    cluster.start_worker(name, wait=False, extra_args=args)
                for name in names:
                    cluster.wait_node(name, "alive", 30)
                return _measure(cluster, sshd, base, names)
            finally:
                cluster.stop()


def _measure(cluster: LocalCluster, ssh: Sshd, base: Path, names: list[str]) -> list[str]:
    pids = [p.pid for p in (cluster.master, *cluster.workers.values()) if p is not None]
    sshd = _sshd_pids()
    ours: list[float] = []
    refs: list[float] = []
    cpus: list[float] = []
    ref_cpus: list[float] = []
    archive = base / "none"
    for i in range(ROUNDS):
        archive.unlink(missing_ok=True)
        archive = _bundle(base, i)
        ref0 = _clients_cpu() + _cpu(sshd)
        refs.append(_reference(ssh, archive, base))
        ref_cpus.append(_clients_cpu() + _cpu(sshd) - ref0)
        cpu0 = _cpu(pids) + _cpu(sshd)
        seconds, ticket = _submit(cluster, archive, f"b{i}")
        cpus.append(_cpu(pids) + _cpu(sshd) - cpu0)
        ours.append(seconds)
        sent = {r["node"]: r["steps"][0]["sent"] for r in ticket["replicas"]}
        if sorted(sent) != names or sum(sent.values()) != WORKERS * archive.stat().st_size:
            raise RuntimeError(f"expected one send a node: {sent}")
        _clean(cluster, f"b{i}", names)
        if i < ROUNDS - 1:  # earlier rounds' bundles: keep the disk from filling
            for name in names:
                shutil.rmtree(cluster.worker_root(name) / "bundles", ignore_errors=True)
    ours_s, ref_s = median(ours), median(refs)
    ratio = ours_s / ref_s
    lines = [
        line(
            f"bundle of {FILES * FILE_SIZE // MiB} MB to {REPLICAS} replicas on {WORKERS} workers",
            f"submit to all running {ours_s:.2f} s ({ratio:.2f}x; CPU of master, workers "
            f"and sshd {median(cpus):.2f} s), median of {ROUNDS}; the first round, opening "
            f"the connections: {ours[0]:.2f} s ({ours[0] / refs[0]:.2f}x its reference)",
            f"{WORKERS} sequential scp + ssh tar xf {ref_s:.2f} s (CPU of scp, ssh and sshd "
            f"{median(ref_cpus):.2f} s)",
            "<= 0.5x",
            ratio <= 0.5,
        )
    ]

    per_node: list[float] = []
    walls: list[float] = []
    for j in range(AGAIN_RUNS):
        seconds, ticket = _submit(cluster, archive, f"again{j}")
        walls.append(seconds)
        steps = [r["steps"][0] for r in ticket["replicas"]]
        if any(s["sent"] for s in steps):
            raise RuntimeError(f"an unchanged bundle was sent again: {steps}")
        per_node.append(max(s["ended_at"] - s["started_at"] for s in steps))
        _clean(cluster, f"again{j}", names)
    worst = max(per_node)
    lines.append(
        line(
            "resubmit the same bundle: its transfer per node",
            f"median {median(per_node) * 1000:.1f} ms, worst {worst * 1000:.1f} ms, 0 bytes; "
            f"submit to all running {median(walls):.2f} s",
            f"first submit {ours_s:.2f} s",
            "<= 50 ms per node",
            worst <= 0.050,
        )
    )
    return lines
