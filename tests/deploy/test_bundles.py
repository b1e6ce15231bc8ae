"""``submit --bundle``: a real master, two real workers, a private sshd, real gcc and make.

A C source and a Makefile whose ``run`` target builds and runs it go to
two nodes once each; each replica builds and runs in its own directory;
``fetch`` brings both logs home; a resubmit sends nothing (the SFTP
push's own byte count, and the node's copy keeps its inode); ``fetch
--purge`` leaves no workspace.  Each hostile bundle is refused on the
worker with a one-line reason naming the member, and nothing is written
outside the working directory.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import LocalCluster, wait_until
from corral.__main__ import main as corral_main
from tests.archives import empty_files_tgz
from tests.cli.conftest import wait_for
from tests.deploy.sshd import Sshd

pytestmark = pytest.mark.timeout(180)

NODES = ("b1", "b2")
HELLO_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    char cwd[4096];
    printf("hello from %s\n", getcwd(cwd, sizeof cwd));
    return 0;
}
"""
MAKEFILE = "hello: hello.c\n\tgcc -O1 -o hello hello.c\n\nrun: hello\n\t./hello\n"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, gcc: str
) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("bundle-cluster")), heartbeat=1.0)
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


def ended(cluster: LocalCluster, job: int) -> dict[str, Any]:
    done = ("succeeded", "failed", "cancelled")
    t: dict[str, Any] = wait_until(
        lambda: (
            (t := ticket(cluster, job))["state"] in done
            and all(r["state"] not in ("launching", "pending") for r in t["replicas"])
            and t
        ),
        60,
        f"job {job} to end",
    )
    return t


def workdir(cluster: LocalCluster, app: str, job: int, index: int, node: str) -> Path:
    return cluster.worker_root(node) / "apps" / app / "jobs" / str(job) / str(index)


def submit(cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *argv: str) -> int:
    status, out, err = corral(cluster, capsys, "submit", *argv)
    assert status == 0, err
    return int(out)


def make_bundle(tmp: Path, name: str, makefile: str = MAKEFILE, source: str = HELLO_C) -> Path:
    src = tmp / f"{name}-src"
    src.mkdir()
    (src / "hello.c").write_text(source)
    (src / "Makefile").write_text(makefile)
    archive = tmp / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted(src.iterdir()):
            tf.add(f, arcname=f.name)
    return archive


def test_a_c_bundle_builds_and_runs_with_make_on_two_nodes_sent_once_then_never(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archive = make_bundle(tmp_path, "app")
    job = submit(
        cluster, capsys, "--bundle", str(archive), "--replicas", "2", "--spread",
        "--app", "mk", "--output", "hello", "--", "make", "run",
    )  # fmt: skip
    t = ended(cluster, job)
    assert t["state"] == "succeeded", t["reason"]
    assert {r["node"] for r in t["replicas"]} == set(NODES)
    for r in t["replicas"]:
        names = [s["name"] for s in r["steps"]]
        assert names == ["sending", "unpacking"]
        assert r["steps"][0]["sent"] == archive.stat().st_size  # the SFTP push's count
        assert all(s["ended_at"] is not None for s in r["steps"])
    status, out, err = corral(cluster, capsys, "job", str(job))
    assert status == 0 and "STEPS" in out and "unpacked" in out and "ran " in out, out
    assert "app.tar.gz" in out

    held = {n: (cluster.worker_root(n) / "bundles" / t["bundle"]).stat() for n in NODES}
    dest = tmp_path / "results"
    status, out, err = corral(cluster, capsys, "fetch", str(job), "--to", str(dest))
    assert status == 0, err
    for r in t["replicas"]:
        here = dest / str(job) / f"{r['index']}-{r['node']}"
        there = workdir(cluster, "mk", job, r["index"], r["node"])
        log = (here / f"{r['launch']}.log").read_text()
        assert f"hello from {there}" in log, log
        assert "gcc -O1 -o hello hello.c" in log
        assert (here / "hello").read_bytes() == (there / "hello").read_bytes()

    again = submit(
        cluster, capsys, "--bundle", str(archive), "--replicas", "2", "--spread",
        "--app", "mk", "--", "make", "run",
    )  # fmt: skip
    t2 = ended(cluster, again)
    assert t2["state"] == "succeeded", t2["reason"]
    assert t2["bundle"] == t["bundle"]
    for r in t2["replicas"]:
        assert r["steps"][0]["sent"] == 0, r["steps"]
    for n in NODES:
        now = (cluster.worker_root(n) / "bundles" / t["bundle"]).stat()
        assert now.st_ino == held[n].st_ino  # a send would have renamed a new file in
    status, out, err = corral(cluster, capsys, "job", str(again))
    assert "had it" in out, out

    status, out, err = corral(cluster, capsys, "fetch", str(again), "--to", str(dest), "--purge")
    assert status == 0, err
    assert out.count("working directory removed") == 2, out
    for r in t2["replicas"]:
        assert not workdir(cluster, "mk", again, r["index"], r["node"]).exists()
        assert (dest / str(again) / f"{r['index']}-{r['node']}" / f"{r['launch']}.log").exists()
    for n in NODES:
        assert not (cluster.worker_root(n) / "apps" / "mk" / "jobs" / str(again)).exists()
    assert "purged" in corral(cluster, capsys, "job", str(again))[1]


def test_a_node_that_lost_its_copy_is_sent_the_bundle_again(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archive = make_bundle(tmp_path, "lost", source=HELLO_C + "/* lost */\n")
    argv = ["--bundle", str(archive), "--replicas", "2", "--spread", "--app", "mk2"]
    first = ended(cluster, submit(cluster, capsys, *argv, "--", "make", "run"))
    assert first["state"] == "succeeded", first["reason"]
    (cluster.worker_root("b1") / "bundles" / first["bundle"]).unlink()  # swept, say
    t = ended(cluster, submit(cluster, capsys, *argv, "--", "make", "run"))
    assert t["state"] == "succeeded", t["reason"]
    sent = {r["node"]: r["steps"][-2]["sent"] for r in t["replicas"]}
    assert sent == {"b1": archive.stat().st_size, "b2": 0}, t["replicas"]
    assert (cluster.worker_root("b1") / "bundles" / first["bundle"]).exists()


def test_a_failed_build_fails_its_replica_with_makes_status_and_keeps_the_log(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archive = make_bundle(tmp_path, "broken", source="int main(void) { return nope; }\n")
    job = submit(cluster, capsys, "--bundle", str(archive), "--app", "mkbad", "--", "make", "run")
    t = ended(cluster, job)
    assert t["state"] == "failed"
    (r,) = t["replicas"]
    assert (r["state"], r["exit_code"]) == ("exited", 2)
    dest = tmp_path / "out"
    status, _, err = corral(cluster, capsys, "fetch", str(job), "--to", str(dest))
    assert status == 0, err
    log = (dest / str(job) / f"0-{r['node']}" / f"{r['launch']}.log").read_text()
    assert "nope" in log and "Error" in log, log


def test_a_directory_bundle_is_sent_as_a_tar_and_run_from_its_directory(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "dirbundle"
    (src / "data").mkdir(parents=True)
    (src / "data" / "input.txt").write_text("42\n")
    run = src / "run.sh"
    run.write_text('#!/bin/sh\necho "answer $(cat data/input.txt)"\n')
    run.chmod(0o755)
    job = submit(cluster, capsys, "--bundle", str(src), "--app", "dirb", "--", "./run.sh")
    t = ended(cluster, job)
    assert t["state"] == "succeeded", t["reason"]
    (r,) = t["replicas"]
    there = workdir(cluster, "dirb", job, 0, r["node"])
    assert (there / "data" / "input.txt").read_text() == "42\n"
    log = cluster.worker_root(r["node"]) / "apps" / "dirb" / "logs" / f"{r['launch']}.log"
    assert log.read_text() == "answer 42\n"


# --- hostile bundles ------------------------------------------------------------------------

Adder = Callable[[tarfile.TarFile], None]


def member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b""
) -> Adder:
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, linkname, len(data)
        tf.addfile(info, io.BytesIO(data) if data else None)

    return add


def hostile(path: Path, *adders: Adder) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.addfile(tarfile.TarInfo("fine.txt"), io.BytesIO(b""))
        for add in adders:
            add(tf)
    return path


def many_files(path: Path) -> Path:
    return empty_files_tgz(path, 100_000)


def ten_gb(path: Path) -> Path:
    info = tarfile.TarInfo("zeros")
    info.size = 10 << 30
    path.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(64 << 10)))
    assert path.stat().st_size < 1024
    return path


def test_each_hostile_bundle_is_refused_naming_its_member_and_writes_nothing_outside(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    etc_x = Path("/etc/corral-bundle-test-x")
    cases: list[tuple[Path, str, str]] = [
        (hostile(tmp_path / "dotdot.tgz", member("../evil", data=b"x")), "../evil", "'..'"),
        (hostile(tmp_path / "abs.tgz", member(str(etc_x), data=b"x")), str(etc_x), "absolute"),
        (
            hostile(
                tmp_path / "symlink.tgz",
                member("d", tarfile.SYMTYPE, str(outside)),
                member("d/x", data=b"x"),
            ),
            "d",
            "absolute",
        ),
        (
            hostile(tmp_path / "hard.tgz", member("pw", tarfile.LNKTYPE, "/etc/passwd")),
            "pw",
            "absolute",
        ),
        (hostile(tmp_path / "dev.tgz", member("null", tarfile.CHRTYPE)), "null", "device"),
        (many_files(tmp_path / "many.tgz"), "f10000", "more than 10000 members"),
        (ten_gb(tmp_path / "bomb.tgz"), "zeros", "unpacks past 2.0 GiB"),
    ]
    for archive, name, why in cases:
        job = submit(cluster, capsys, "--bundle", str(archive), "--app", "evil", "--", "true")
        t = ended(cluster, job)
        assert t["state"] == "failed", (archive.name, t)
        (r,) = t["replicas"]
        assert r["state"] == "failed" and not r["launch"], r
        assert r["reason"].startswith("bundle refused: ") and "\n" not in r["reason"]
        assert f"member {name!r}" in r["reason"] and why in r["reason"], r["reason"]
        assert [s["name"] for s in r["steps"]] == ["sending", "unpacking"]
        assert r["steps"][1]["failed"]
        jobdir = cluster.worker_root(r["node"]) / "apps" / "evil" / "jobs" / str(job)
        assert os.listdir(jobdir) == [], (archive.name, os.listdir(jobdir))  # no workdir left
    for node in NODES:
        app = cluster.worker_root(node) / "apps" / "evil"
        assert not (app / "jobs" / "evil").exists() and not (app / "evil").exists()
    assert not etc_x.exists()
    assert list(outside.iterdir()) == []
    assert os.path.getsize("/etc/passwd") > 0
    _, out, _ = corral(cluster, capsys, "job", str(job))
    assert "unpacking failed" in out, out


def test_a_path_that_is_not_a_bundle_is_refused_at_submit(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not an archive\n")
    before = corral(cluster, capsys, "jobs", "--all", "--json")[1]
    status, _, err = corral(cluster, capsys, "submit", "--bundle", str(junk), "--", "true")
    assert status == 1 and err.count("\n") == 1 and "not a tar" in err, err
    status, _, err = corral(cluster, capsys, "submit", "--bundle", "/nope/x.tgz", "--", "true")
    assert status == 1 and "no such file" in err, err
    assert corral(cluster, capsys, "jobs", "--all", "--json")[1] == before  # nothing stored


def test_keep_workdirs_in_the_masters_config_purges_ended_jobs_workdirs(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Last in the module: while it is set, every ended job's directories go."""
    config = cluster.state / "config.toml"
    saved = config.read_text()
    job = submit(cluster, capsys, "--app", "kept", "--", "sh", "-c", "echo here > out.txt")
    t = ended(cluster, job)
    (r,) = t["replicas"]
    there = workdir(cluster, "kept", job, 0, r["node"])
    assert (there / "out.txt").read_text() == "here\n"
    config.write_text(saved + '\n[jobs]\nkeep_workdirs = "1s"\n')
    try:
        wait_until(lambda: not there.exists(), 30, "the master to purge the working directory")
        wait_until(lambda: ticket(cluster, job)["purged"], 10, "the ticket to say purged")
    finally:
        config.write_text(saved)
    log = cluster.worker_root(r["node"]) / "apps" / "kept" / "logs" / f"{r['launch']}.log"
    assert log.exists()  # the log stays (rm APP --logs removes it)


def test_a_queued_bundle_job_starts_after_a_master_kill_9_and_restart(
    sshd: Sshd, tmp_path: Path
) -> None:
    """The bundle waits in STATE_DIR/bundles/SHA256; the restarted master sends it from there."""
    from tests.cli.conftest import Cluster

    c = Cluster(tmp_path / "c")
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text(f'[ssh]\nuser = "{sshd.user}"\nkey = "{sshd.key}"\n')
    shutil.copy(sshd.known_hosts, c.state / "known_hosts")
    src = tmp_path / "later"
    src.mkdir()
    (src / "run.sh").write_text("#!/bin/sh\necho started after the restart\n")
    (src / "run.sh").chmod(0o755)
    try:
        c.start_master()
        for name in ("r1", "r2"):
            c.start_worker(name, "--mem", "250M", "--ssh-port", str(sshd.port))
        c.wait_alive("r1", "r2")
        r = c.corral("submit", "--replicas", "2", "--spread", "--mem", "200M", "--", "sleep", "309")
        assert r.status == 0, r
        hold = int(r.out)
        r = c.corral("submit", "--bundle", str(src), "--mem", "100M", "--", "./run.sh")
        assert r.status == 0 and "queued" in r.err, r
        job = int(r.out)
        (sha,) = [p.name for p in (c.state / "bundles").iterdir()]
        assert c.master is not None
        c.master.send_signal(signal.SIGKILL)
        c.master.wait()
        shutil.rmtree(src)  # the operator's copy is gone: the master's is what goes
        c.start_master()
        c.wait_alive("r1", "r2")
        assert c.corral("cancel", str(hold)).status == 0

        def done() -> dict[str, Any] | None:
            t = c.corral("job", str(job), "--json").json()
            return t if t["state"] in ("succeeded", "failed") else None

        t = wait_for(done, f"job {job} to run after the restart", 60)
        assert t["state"] == "succeeded", t["reason"]
        assert t["bundle"] == sha
        (rep,) = t["replicas"]
        log = c.tmp / rep["node"] / "apps" / "run.sh" / "logs" / f"{rep['launch']}.log"
        assert log.read_text() == "started after the restart\n"
        wait_for(lambda: not (c.state / "bundles" / sha).exists(), "the master's copy to go")
    finally:
        c.close()
