"""Deploy speed: corral beside ``scp`` to the same local sshd, in the same run.

Setup: a private sshd on 127.0.0.1 (the tests' fixture), a real master and
8 real workers advertising that sshd's port.  Every corral figure is the
wall time of ``POST /v1/deploy`` as the CLI sees it: resolve, hash, ask the
node, push, rename.

(a) one 200 MB file to one node, into a fresh app each round (its content
    changed each round, so nothing is cached): throughput vs one scp.  The
    master keeps its SSH connection to a node open between transfers
    (``[ssh] keep_open``), as scp does not: the first round opens it, the
    later ones reuse it, and the first round's time is printed beside the median.
(b) the same file again, unchanged: time per node vs scp copying it again.
(c) a 50 MB app (a gcc-built program, its library, a 50 MB data file) to
    8 workers at once, beside 8 sequential scp runs of the same files.
(d) a fresh 50 MiB file to 3 and to 8 workers at once, beside rsync of it
    to as many fresh directories at once over one open OpenSSH connection
    (ControlMaster) to the same sshd: what an operator's own tools do.

On 4 cores or more, a node's push of 64 MiB or more is written by child
processes (master/pusher.py), and the figures include starting them; on
fewer cores every push runs in a thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import LocalCluster
from bench.report import line, median
from bench.sshmux import control_master, rsync_e
from tests.deploy.sshd import Sshd, sshd_available, start_sshd

MiB = 2**20
BIG = 200 * MiB
APP_DATA = 50 * MiB
FAN = 50 * MiB
ROUNDS = 5
UNCHANGED_RUNS = 7
WORKERS = 8


def _random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    return path


def _touch_content(path: Path, round_no: int) -> None:
    """A new build: different first bytes, new mtime (nothing cached anywhere)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(16) + round_no.to_bytes(4, "big"), 0)
    finally:
        os.close(fd)


def _scp(sshd: Sshd, files: list[Path], dest: Path) -> float:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = ["scp", "-q", "-B", "-i", str(sshd.key), "-P", str(sshd.port)]
    cmd += ["-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    cmd += [*map(str, files), f"{sshd.user}@{sshd.host}:{dest}/"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic() - t0


def _deploy(cluster: LocalCluster, **body: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    reply: dict[str, Any] = cluster.call("POST", "/v1/deploy", body, timeout=600)
    seconds = time.monotonic() - t0
    failed = [r for r in reply["results"] if r["error"]]
    if failed:
        raise RuntimeError(f"deploy failed: {failed[0]['node']}: {failed[0]['error']}")
    return seconds, reply


def _settled(cluster: LocalCluster, file: Path, app: str, nodes: list[str]) -> float:
    """Wait out the worker's background check of what a push delivered (a dry run
    waits for it); its time is reported, as it is CPU the worker spends."""
    t0 = time.monotonic()
    _deploy(cluster, file=str(file), app=app, nodes=nodes, dry_run=True, force=True)
    return time.monotonic() - t0


def _app(d: Path) -> tuple[Path, list[Path]]:
    """A program, its library and a 50 MB data file; plain files if gcc is missing."""
    d.mkdir(parents=True, exist_ok=True)
    data = _random_file(d / "libdata.so", APP_DATA)
    if shutil.which("gcc"):
        from tests.deploy.build import hello_app

        exe, lib = hello_app(d / "src")
        return exe, [lib, data]
    exe = d / "tool.sh"
    exe.write_text("#!/bin/sh\necho tool\n")
    return exe, [data]


def run() -> list[str]:
    if not sshd_available() or not shutil.which("scp"):
        return ["[SKIP] deploy: OpenSSH server or scp not installed"]
    with tempfile.TemporaryDirectory(prefix="corral-bench-deploy-") as tmp:
        base = Path(tmp)
        with start_sshd(base) as sshd:
            cluster = LocalCluster(base / "cluster")
            cluster.use_sshd(sshd)
            try:
                cluster.start_master()
                names = [f"w{i}" for i in range(1, WORKERS + 1)]
                for name in names:
                    cluster.start_worker(
                        name, wait=False, extra_args=["--ssh-port", str(sshd.port)]
                    )
                for name in names:
                    cluster.wait_node(name, "alive", 30)
                return _measure(cluster, sshd, base, names)
            finally:
                cluster.stop()


def _measure(cluster: LocalCluster, sshd: Sshd, base: Path, names: list[str]) -> list[str]:
    big = _random_file(base / "big.bin", BIG)
    scp_times: list[float] = []
    corral_times: list[float] = []
    push_times: list[float] = []
    settle_times: list[float] = []
    app = ""
    for i in range(ROUNDS):
        _touch_content(big, i)
        scp_dest = base / "scp" / f"r{i}"
        scp_times.append(_scp(sshd, [big], scp_dest))
        shutil.rmtree(scp_dest)
        if app:  # the previous round's copy: keep the disk from filling
            cluster.call("POST", "/v1/rm", {"app": app, "nodes": ["w1"]})
        app = f"big{i}"
        seconds, reply = _deploy(cluster, file=str(big), app=app, nodes=["w1"], force=True)
        corral_times.append(seconds)
        push_times.append(sum(f["seconds"] for f in reply["results"][0]["sent"]))
        settle_times.append(_settled(cluster, big, app, ["w1"]))
    scp_s, corral_s = median(scp_times), median(corral_times)
    ratio = scp_s / corral_s
    lines = [
        line(
            "deploy 200 MB to one node",
            f"{BIG / MiB / corral_s:.0f} MiB/s ({corral_s:.2f} s end to end; SFTP alone "
            f"{median(push_times):.2f} s), {ratio:.2f}x scp; the first round, opening the "
            f"connection: {corral_times[0]:.2f} s; worker's check afterwards "
            f"{median(settle_times):.2f} s in the background",
            f"scp {BIG / MiB / scp_s:.0f} MiB/s ({scp_s:.2f} s), median of {ROUNDS}",
            ">= 1.5x scp",
            ratio >= 1.5,
        )
    ]

    per_node: list[float] = []
    walls: list[float] = []
    for _ in range(UNCHANGED_RUNS):
        seconds, reply = _deploy(cluster, file=str(big), app=app, nodes=["w1"], force=True)
        r = reply["results"][0]
        assert r["bytes"] == 0, r
        walls.append(seconds)
        per_node.append(r["seconds"])
    wall = median(walls)
    speedup = scp_s / wall
    lines.append(
        line(
            "redeploy 200 MB unchanged",
            f"{wall * 1000:.1f} ms end to end ({median(per_node) * 1000:.1f} ms on the node), "
            f"0 bytes sent, {speedup:.0f}x faster than scp",
            f"scp copying it again {scp_s:.2f} s",
            "<= 50 ms per node, >= 15x scp",
            wall <= 0.050 and speedup >= 15,
        )
    )
    cluster.call("POST", "/v1/rm", {"app": app, "nodes": ["w1"], "logs": True})

    exe, libs = _app(base / "app")
    files = [exe, *libs]
    total = sum(f.stat().st_size for f in files)
    scp_all = 0.0
    for name in names:
        dest = base / "scp8" / name
        scp_all += _scp(sshd, files, dest)
        shutil.rmtree(dest)
    seconds, reply = _deploy(cluster, file=str(exe), libs=[str(p) for p in libs], all=True)
    assert all(sum(f["bytes"] for f in r["sent"]) == total for r in reply["results"]), reply
    lines += _fanout(cluster, sshd, base, names)
    lines.append(
        line(
            f"deploy a {total / MiB:.0f} MB app ({len(files)} files) to {len(names)} workers",
            f"{seconds:.2f} s wall, {len(names) * total / MiB / seconds:.0f} MiB/s in all",
            f"{len(names)} sequential scp runs {scp_all:.2f} s",
            "<= the sequential scp runs",
            seconds <= scp_all,
        )
    )
    return lines


def _fanout(cluster: LocalCluster, sshd: Sshd, base: Path, names: list[str]) -> list[str]:
    """(d): 50 MiB to 3 and to 8 workers at once, beside as many rsyncs at once."""
    if not shutil.which("rsync"):
        return ["[SKIP] deploy 50 MiB to 3 and 8 workers: rsync (the reference) not installed"]
    data = _random_file(base / "fan.bin", FAN)
    out = []
    with control_master(sshd, base) as ssh:
        e, where = rsync_e(ssh)
        for count in (3, len(names)):
            nodes = names[:count]
            corral_s, rsync_s = [], []
            for i in range(ROUNDS):
                _touch_content(data, 100 + i)
                dests = [base / "rsync" / f"r{i}-{n}" for n in nodes]
                for d in dests:
                    d.mkdir(parents=True)
                cmds = [["rsync", "-a", "-e", e, str(data), f"{where}:{d}/"] for d in dests]
                t0 = time.monotonic()
                procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
                if any(p.wait() for p in procs):
                    raise RuntimeError("rsync failed")
                rsync_s.append(time.monotonic() - t0)
                shutil.rmtree(base / "rsync")
                app = f"fan{count}r{i}"
                seconds, _ = _deploy(cluster, file=str(data), app=app, nodes=nodes, force=True)
                corral_s.append(seconds)
                _settled(cluster, data, app, nodes)
                cluster.call("POST", "/v1/rm", {"app": app, "nodes": nodes, "logs": True})
            c, r = median(corral_s), median(rsync_s)
            out.append(
                line(
                    f"deploy 50 MiB to {count} workers at once",
                    f"{c:.2f} s ({count * FAN / MiB / c:.0f} MiB/s in all)",
                    f"{count} rsync at once over an open connection {r:.2f} s "
                    f"({count * FAN / MiB / r:.0f} MiB/s), median of {ROUNDS}",
                    "<= rsync",
                    c <= r,
                )
            )
    return out
