"""The worker's side of jobs: request keys, working directories, job files, removal, --mem."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.daemon import jobs, procfs, records, shim, worker
from corral.daemon.forker import Forker
from corral.daemon.store import AppStore
from corral.transport import messages as m
from corral.transport.connection import CallError
from tests.daemon.harness import REPO, FakeMaster, wait_for
from tests.procs import gone

MiB = 1 << 20


def launch(app: str, *argv: str, key: str = "", workdir: str = ""):
    return lambda i: m.Launch(id=i, app=app, argv=list(argv), key=key, workdir=workdir)


def job_files(app: str, workdir: str, *globs: str):
    return lambda i: m.JobFiles(id=i, app=app, workdir=workdir, globs=list(globs))


async def start(master: FakeMaster, spawn_worker, *args: str) -> m.Register:
    spawn_worker(master.port, args=args)
    return await master.connected()


async def run_to_end(master: FakeMaster, make) -> m.ProcInfo:
    """Launch, wait for the end; the ended info (exited 0 asserted)."""
    info = (await master.call(make)).proc
    ended = await wait_for(lambda: master.ended(info.pid), what=f"end of {info.argv}")
    assert (ended.state, ended.exit_code) == ("exited", 0), ended
    return ended


def log_of(root: Path, info: m.ProcInfo, app: str = "demo") -> str:
    return (root / "apps" / app / "logs" / f"{info.launch}.log").read_text()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ---------------------------------------------------------------- keys


async def test_the_key_shows_in_status_and_after_a_restart(master, spawn_worker, root: Path):
    first = spawn_worker(master.port)
    await master.connected()
    info = (await master.call(launch("demo", "sleep", "30", key="job-7-0"))).proc
    assert info.key == "job-7-0"
    plain = (await master.call(launch("demo", "sleep", "30"))).proc
    assert plain.key == ""
    status = await master.call(lambda i: m.Status(id=i))
    assert {p.pid: p.key for p in status.procs} == {info.pid: "job-7-0", plain.pid: ""}
    record = root / "run" / f"{info.launch}.json"
    await wait_for(record.exists, what="launch record")
    assert json.loads(record.read_text())["key"] == "job-7-0"

    first.kill9()
    await wait_for(lambda: master.conn is None, what="connection drop")
    spawn_worker(master.port)
    reg = await master.connected(registers=2)
    assert {p.pid: (p.key, p.state) for p in reg.procs} == {
        info.pid: ("job-7-0", "sleeping"),
        plain.pid: ("", "sleeping"),
    }
    again = await master.call(lambda i: m.Status(id=i))
    assert {p.pid: p.key for p in again.procs} == {info.pid: "job-7-0", plain.pid: ""}


def test_a_record_from_before_keys_reads_with_no_key(tmp_path: Path):
    old = {
        "launch": "20260101-000000.000-0ld0",
        "pid": 1,
        "shim": 1,
        "shim_start": 1,
        "app": "demo",
        "argv": ["true"],
        "started_at": 1.0,
        "start": 1,
        "boot_id": "b",
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    rec = records.load_launch(path)
    assert rec is not None and rec.key == ""


# ---------------------------------------------------------------- working directories


async def test_a_launch_runs_in_its_working_directory(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    script = "pwd; echo hi > out.txt"
    ended = await run_to_end(master, launch("demo", "sh", "-c", script, workdir="jobs/7/0"))
    work = root.resolve() / "apps/demo/jobs/7/0"
    assert log_of(root, ended) == f"{work}\n"  # the log stays in logs/
    assert (work / "out.txt").read_text() == "hi\n"
    for made in ("jobs", "jobs/7", "jobs/7/0"):
        assert mode(root / "apps/demo" / made) == 0o700, made
    # The next replica beside it; the app dir is still the default.
    await run_to_end(master, launch("demo", "sh", "-c", script, workdir="jobs/7/1"))
    assert (root / "apps/demo/jobs/7/1/out.txt").read_text() == "hi\n"
    plain = await run_to_end(master, launch("demo", "pwd"))
    assert log_of(root, plain) == f"{root.resolve()}/apps/demo\n"


async def test_a_relative_command_is_found_in_the_working_directory(
    master, spawn_worker, root: Path
):
    await start(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    app = root / "apps/demo"
    work = app / "jobs/3/0"
    (work / "sub").mkdir(parents=True)
    for where, said in ((app, "app dir"), (work, "workdir")):
        (where / "run.sh").write_text(f"#!/bin/sh\necho {said}\n")
        (where / "run.sh").chmod(0o755)
    (work / "sub/prog").write_text("#!/bin/sh\necho sub prog\n")
    (work / "sub/prog").chmod(0o755)
    (app / "bin/tool").write_text("#!/bin/sh\necho app bin\n")
    (app / "bin/tool").chmod(0o755)

    ran = await run_to_end(master, launch("demo", "./run.sh", workdir="jobs/3/0"))
    assert log_of(root, ran) == "workdir\n"
    ran = await run_to_end(master, launch("demo", "sub/prog", workdir="jobs/3/0"))
    assert log_of(root, ran) == "sub prog\n"
    ran = await run_to_end(master, launch("demo", "./run.sh"))  # no workdir: as before
    assert log_of(root, ran) == "app dir\n"
    ran = await run_to_end(master, launch("demo", "tool", workdir="jobs/3/0"))  # a bare name
    assert log_of(root, ran) == "app bin\n"
    with pytest.raises(CallError, match="cannot execute 'sub/prog'"):
        await master.call(launch("demo", "sub/prog"))  # only the workdir has it
    with pytest.raises(CallError, match=r"cannot execute '\./nope\.sh'"):
        await master.call(launch("demo", "./nope.sh", workdir="jobs/3/1"))


BAD_WORKDIRS = [
    ("../x", "'..' is not a directory name"),
    ("/abs", "it must be relative"),
    ("jobs/../../x", "'..' is not a directory name"),
    ("jobs/./x", "'.' is not a directory name"),
    ("jobs//x", "'' is not a directory name"),
    ("jobs/7/", "'' is not a directory name"),
    ("results/7/0", "it must be inside jobs/"),
    ("/".join(["jobs"] + ["x"] * 8), "more than 8 levels"),
    ("jobs/" + "x" * 300, "is not a directory name"),
    ("jobs/a\nb", None),
]


async def test_bad_working_directories_are_refused_and_nothing_is_made(
    master, spawn_worker, root: Path
):
    await start(master, spawn_worker)
    for workdir, why in BAD_WORKDIRS:
        with pytest.raises(CallError) as refused:
            await master.call(launch("fresh", "true", workdir=workdir))
        text = str(refused.value)
        assert "\n" not in text and text.startswith("bad working directory"), text
        if why is not None:
            assert why in text, text
        with pytest.raises(CallError, match="bad working directory") as refused:
            await master.call(job_files("fresh", workdir, "*"))
        assert "\n" not in str(refused.value)
    with pytest.raises(CallError, match="bad working directory '': it is empty"):
        await master.call(job_files("fresh", "", "*"))
    assert not (root / "apps/fresh").exists()  # not even the app dir
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs == []


@pytest.mark.parametrize("planted", ["jobs", "jobs/7"])
async def test_a_symlinked_working_directory_is_refused(
    master, spawn_worker, root: Path, tmp_path: Path, planted: str
):
    await start(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = root / "apps/demo" / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere)
    with pytest.raises(CallError, match=f"refusing apps/demo/{planted}: it is a symlink"):
        await master.call(launch("demo", "sh", "-c", "echo x > out.txt", workdir="jobs/7/0"))
    with pytest.raises(CallError, match=f"refusing apps/demo/{planted}: it is a symlink"):
        await master.call(job_files("demo", "jobs/7/0", "**"))
    assert list(elsewhere.iterdir()) == []
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs == []


@pytest.mark.parametrize("swapped", ["jobs", "jobs/7", "jobs/7/0"])
async def test_the_seed_walks_to_the_working_directory_again(tmp_path: Path, swapped: str):
    """Swapped for a symlink after the daemon made it: the seed refuses to run there."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    store = AppStore(root)
    records.RunDir(store.fd).create()
    forker = Forker(log=lambda _: None)
    forker.start(store.fd)
    try:
        found = store.program("demo", "sh", os.defpath, ("jobs", "7", "0"))
        assert mode(root / "apps/demo/jobs/7/0") == 0o700
        place = root / "apps/demo" / swapped
        shutil.copytree(place, outside)
        place.rename(place.with_name(place.name + ".old"))
        place.symlink_to(outside)
        spec = shim.Spec(
            launch="20260101-000000.000-work",
            app="demo",
            exe=found.path,
            beneath=list(found.beneath),
            script=found.script,
            argv=["sh", "-c", "echo ran > ran"],
            env={},
            started_at=time.time(),
            boot_id="test",
            key="k",
            workdir=["jobs", "7", "0"],
        )
        spare = await forker.take(5.0)
        try:
            shim.hand(spare, shim.encode_spec(spec))
            report = await asyncio.to_thread(read_all, spare.report)
        finally:
            os.close(spare.report)
            os.close(spare.pidfd)
        assert shim.parse_report(report) in (errno.ENOTDIR, errno.ELOOP)
        await wait_for(lambda: gone(spare.pid), what="the shim's end")
        ex = records.load_exit(root / "run", spec.launch)
        assert ex is not None and os.WEXITSTATUS(ex.status) == 126
        (rec,) = records.launch_records(root / "run")
        assert rec.key == "k"
        assert not list(outside.rglob("ran"))
        log = (root / "apps/demo/logs" / f"{spec.launch}.log").read_text()
        assert log.startswith("corral: cannot enter jobs/7/0: "), log
    finally:
        forker.close()
        store.close()


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 256):
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- job files

WRITER = """
mkdir -p results/deep a/b linked
echo hello > out.txt
echo 1,2 > results/a.csv
echo 3,4,5 > results/z.csv
echo no > results/b.txt
echo deep > results/deep/c.csv
echo top > x.log
echo nested > a/b/c.log
echo hidden > linked/e.log
ln -s /etc/passwd passwd.log
ln -s /etc/passwd results/p.csv
ln -s linked dirlink
mkfifo results/fifo.csv
"""


async def test_job_files_lists_matching_regular_files_only(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    await run_to_end(master, launch("demo", "sh", "-c", WRITER, workdir="jobs/12/0"))
    work = root.resolve() / "apps/demo/jobs/12/0"
    assert (work / "dirlink").is_symlink() and (work / "passwd.log").is_symlink()

    reply = await master.call(job_files("demo", "jobs/12/0", "out.txt", "results/*.csv"))
    assert reply.path == str(work)
    assert [(f.path, f.size) for f in reply.files] == [
        ("out.txt", 6),
        ("results/a.csv", 4),
        ("results/z.csv", 6),
    ]
    reply = await master.call(job_files("demo", "jobs/12/0", "**/*.log"))
    # Not passwd.log (a symlink to /etc/passwd), not dirlink/e.log (through a symlinked dir).
    assert [f.path for f in reply.files] == ["a/b/c.log", "linked/e.log", "x.log"]
    reply = await master.call(job_files("demo", "jobs/12/0", "results/**"))
    assert [f.path for f in reply.files] == [
        "results/a.csv",
        "results/b.txt",
        "results/deep/c.csv",
        "results/z.csv",
    ]
    reply = await master.call(job_files("demo", "jobs/12/0", "./out.txt", "out.txt", "nope"))
    assert [f.path for f in reply.files] == ["out.txt"]  # listed once


async def test_job_files_refusals_and_missing_directories(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    for glob in ("../x", "results/../../x", "/etc/passwd", "", "."):
        with pytest.raises(CallError, match="bad glob") as refused:
            await master.call(job_files("demo", "jobs/1/0", "out.txt", glob))
        assert "\n" not in str(refused.value)
    with pytest.raises(CallError, match="invalid app name"):
        await master.call(job_files("../x", "jobs/1/0", "*"))
    # No app yet, then an app without that replica: nothing to list, not an error.
    reply = await master.call(job_files("demo", "jobs/1/0", "*"))
    assert (reply.path, reply.files) == (f"{root.resolve()}/apps/demo/jobs/1/0", [])
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    reply = await master.call(job_files("demo", "jobs/1/0", "*"))
    assert reply.files == []
    assert not (root / "apps/demo/jobs").exists()  # listing makes nothing


def test_job_files_cap(tmp_path: Path):
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_text("x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        globs = jobs.compile_globs(["*.txt"])
        assert len(jobs.find_files(fd, globs, limit=5)) == 5
        with pytest.raises(jobs.JobError, match="more than 4 files match"):
            jobs.find_files(fd, globs, limit=4)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("glob", "path", "hit"),
    [
        ("out.txt", "out.txt", True),
        ("out.txt", "a/out.txt", False),
        ("*.txt", "a/out.txt", False),
        ("*", "a/b", False),
        ("results/*.csv", "results/a.csv", True),
        ("results/*.csv", "results/deep/a.csv", False),
        ("results/?.csv", "results/a.csv", True),
        ("results/?.csv", "results/ab.csv", False),
        ("results/[ab].csv", "results/b.csv", True),
        ("results/[!ab].csv", "results/b.csv", False),
        ("**/*.log", "x.log", True),
        ("**/*.log", "a/b/c.log", True),
        ("a/**/c.log", "a/c.log", True),
        ("a/**/c.log", "a/x/y/c.log", True),
        ("a/**/c.log", "b/c.log", False),
        ("a/**", "a/x/y", True),
        ("a/**", "b/x", False),
        ("**", "any/thing/at/all", True),
    ],
)
def test_glob_matching(glob: str, path: str, hit: bool):
    (compiled,) = jobs.compile_globs([glob])
    assert jobs.matches(compiled, path) is hit


# ---------------------------------------------------------------- removal


async def test_remove_takes_the_jobs_directories(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    await run_to_end(master, launch("demo", "sh", "-c", "echo x > out.txt", workdir="jobs/4/0"))
    app = root / "apps/demo"
    assert (app / "jobs/4/0/out.txt").exists()
    reply = await master.call(lambda i: m.Remove(id=i, app="demo"))
    assert reply.removed == ["apps/demo/bin", "apps/demo/lib", "apps/demo/jobs"]
    assert not (app / "jobs").exists() and (app / "logs").is_dir()
    reply = await master.call(lambda i: m.Remove(id=i, app="demo"))
    assert reply.removed == []  # nothing left but logs
    # Deployed files are listed without anything from jobs/.
    await run_to_end(master, launch("demo", "sh", "-c", "echo x > out.txt", workdir="jobs/5/0"))
    (app / "bin/prog").write_text("p")
    files = await master.call(lambda i: m.Files(id=i, app="demo"))
    assert [f.path for f in files.apps[0].files] == ["bin/prog"]


async def test_remove_never_follows_a_symlinked_jobs(
    master, spawn_worker, root: Path, tmp_path: Path
):
    await start(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    outside = tmp_path / "outside"
    (outside / "7/0").mkdir(parents=True)
    (outside / "7/0/precious").write_text("keep me")
    (root / "apps/demo/jobs").symlink_to(outside)
    reply = await master.call(lambda i: m.Remove(id=i, app="demo", logs=True))
    assert "apps/demo/jobs" in reply.removed and reply.removed[-1] == "apps/demo"
    assert (outside / "7/0/precious").read_text() == "keep me"
    assert not (root / "apps/demo").exists()


# ---------------------------------------------------------------- --mem


def worker_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    worker.add_arguments(parser)
    return parser.parse_args(["--master", "127.0.0.1:9", "--root", str(tmp_path), *extra])


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("10Q", "bad --mem '10Q': use a number with K, M, G or T"),
        ("-1", "bad --mem '-1': it must be positive"),
        ("0", "bad --mem '0': it must be at least one byte"),
        ("", "bad --mem '': use a number"),
    ],
)
def test_bad_mem_is_refused(tmp_path: Path, monkeypatch, given: str, why: str):
    monkeypatch.setenv("CORRAL_TOKEN", "t" * 32)
    with pytest.raises(worker.ConfigError) as refused:
        worker.config_from_args(worker_args(tmp_path, f"--mem={given}"))
    assert str(refused.value).startswith(why) and "\n" not in str(refused.value)


def test_mem_accepted_and_its_default(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CORRAL_TOKEN", "t" * 32)
    config = worker.config_from_args(worker_args(tmp_path, "--mem", "250M"))
    assert config.mem_offer == 250 * MiB
    config = worker.config_from_args(worker_args(tmp_path, "--mem", "2GiB"))
    assert config.mem_offer == 2 << 30
    total = procfs.mem_total()
    assert total > 0
    assert worker.config_from_args(worker_args(tmp_path)).mem_offer == int(total * 0.9)


def test_bad_mem_exits_2_with_one_line(tmp_path: Path):
    env = {**os.environ, "CORRAL_TOKEN": "t" * 32}
    argv = [sys.executable, "-m", "corral.daemon", "--master", "127.0.0.1:9"]
    argv += ["--root", str(tmp_path / "root"), "--mem", "10Q"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "corral-worker: bad --mem '10Q': use a number with K, M, G or T (e.g. 512M, 2G)"
    ]
    assert not (tmp_path / "root").exists()  # nothing made


async def test_mem_offer_reaches_the_master(master, spawn_worker):
    reg = await start(master, spawn_worker, "--mem", "250M")
    assert reg.facts.mem_offer == 250 * MiB


async def test_mem_offer_defaults_to_memtotal_less_a_tenth(master, spawn_worker):
    reg = await start(master, spawn_worker)
    assert reg.facts.mem_offer == int(procfs.mem_total() * 0.9)
