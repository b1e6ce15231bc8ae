"""``corral fetch``: a job's logs and outputs over a real sshd, while it runs and after.

A real master and two real workers advertising a private sshd; the job's
replicas write files in their working directories; what arrives in
``DIR/ID/INDEX-NODE/`` is compared byte for byte with what is on the
workers' disks.  A symlink a replica planted is not followed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import LocalCluster, wait_until
from corral.__main__ import main as corral_main
from tests.deploy.sshd import Sshd

pytestmark = pytest.mark.timeout(120)

NODES = ("f1", "f2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("fetch-cluster")), heartbeat=0.5)
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text(f'[ssh]\nuser = "{sshd.user}"\nkey = "{sshd.key}"\n')
    shutil.copy(sshd.known_hosts, c.state / "known_hosts")
    try:
        c.start_master()
        for name in NODES:
            c.start_worker(name, extra_args=["--ssh-port", str(sshd.port), "--mem", "1G"])
        yield c
    finally:
        c.stop()


def corral(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    verb, *rest = argv
    status = corral_main([verb, "--api", cluster.api, "--state-dir", str(cluster.state), *rest])
    out, err = capsys.readouterr()
    return status, out, err


def ticket(cluster: LocalCluster, job: int) -> dict[str, Any]:
    reply: dict[str, Any] = cluster.call("GET", f"/v1/jobs/{job}")
    return reply


def workdir(cluster: LocalCluster, rep: dict[str, Any], app: str, job: int) -> Path:
    return cluster.worker_root(rep["node"]) / "apps" / app / "jobs" / str(job) / str(rep["index"])


def test_fetch_brings_logs_and_outputs_home_while_running_and_after(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = (
        "echo replica $PWD; mkdir -p res; head -c 300000 /dev/urandom > out.txt; "
        "echo a > res/x.csv; echo b > res/y.txt; ln -s /etc/passwd res/z.csv; "
        "touch started; while [ ! -e go ]; do sleep 0.05; done; echo final > res/late.csv"
    )
    status, out, err = corral(
        cluster, capsys, "submit", "--replicas", "2", "--spread", "--app", "fx",
        "--output", "out.txt", "--output", "res/*.csv", "--", "sh", "-c", script,
    )  # fmt: skip
    assert status == 0, err
    job = int(out)
    wait_until(
        lambda: all(
            r.get("pid") and (workdir(cluster, r, "fx", job) / "started").exists()
            for r in ticket(cluster, job)["replicas"]
        ),
        20,
        "both replicas to write their files",
    )
    dest = tmp_path / "results"
    status, out, err = corral(cluster, capsys, "fetch", str(job), "--to", str(dest))
    assert status == 0, err
    t = ticket(cluster, job)
    for r in t["replicas"]:
        here = dest / str(job) / f"{r['index']}-{r['node']}"
        there = workdir(cluster, r, "fx", job)
        assert f"{r['index']}-{r['node']}: 3 files" in out
        assert (here / "out.txt").read_bytes() == (there / "out.txt").read_bytes()
        assert (here / "res" / "x.csv").read_text() == "a\n"
        assert not (here / "res" / "y.txt").exists()  # matches no pattern
        assert not (here / "res" / "z.csv").exists()  # a symlink out: never followed
        log = (here / f"{r['launch']}.log").read_text()
        assert log.startswith(f"replica {there}")
        assert not (here / "res" / "late.csv").exists()  # not written yet

    for r in t["replicas"]:
        (workdir(cluster, r, "fx", job) / "go").touch()
    wait_until(lambda: ticket(cluster, job)["state"] == "succeeded", 20, "the job to succeed")
    status, out, err = corral(cluster, capsys, "fetch", str(job), "--to", str(dest), "--json")
    assert status == 0, err
    for r in t["replicas"]:
        here = dest / str(job) / f"{r['index']}-{r['node']}"
        assert (here / "res" / "late.csv").read_text() == "final\n"  # what exists now
    leftovers = [p for p in dest.rglob("*") if ".corral-tmp-" in p.name]
    assert leftovers == []


def test_fetch_with_an_unreachable_sshd_says_so_per_replica(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = corral(cluster, capsys, "submit", "--app", "fy", "--", "true")
    job = int(out)
    wait_until(lambda: ticket(cluster, job)["state"] == "succeeded", 20, "the job to end")
    config = cluster.state / "config.toml"
    saved = config.read_text()
    config.write_text(saved + "port = 1\n")
    try:
        status, out, err = corral(cluster, capsys, "fetch", str(job), "--to", str(tmp_path))
    finally:
        config.write_text(saved)
    assert status == 1
    assert err.count("\n") == 1 and "cannot reach sshd" in err, err
    assert not (tmp_path / str(job)).exists()  # nothing half made
