"""Programs outlive the daemon; a restarted daemon re-adopts them or says why not."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from corral.daemon import procfs, records
from corral.transport import messages as m
from tests.daemon.harness import exited_pid, wait_for
from tests.procs import gone


def launch(app: str, *argv: str):
    return lambda i: m.Launch(id=i, app=app, argv=list(argv))


async def test_kill9_daemon_then_readopt_and_stop(master, spawn_worker):
    worker = spawn_worker(master.port)
    await master.connected()
    info = (await master.call(launch("demo", "sleep", "30"))).proc
    worker.kill9()
    await wait_for(lambda: master.conn is None, what="connection drop")
    assert psutil.pid_exists(info.pid)
    assert procfs.stat(info.pid).state == "sleeping"

    spawn_worker(master.port)
    reg = await master.connected(registers=2)
    (again,) = reg.procs
    assert (again.pid, again.launch, again.state) == (info.pid, info.launch, "sleeping")
    reply = await master.call(lambda i: m.Signal(id=i, pid=info.pid, signal="SIGINT"))
    assert reply.delivered
    ended = await wait_for(lambda: master.ended(info.pid), what="end of the adopted program")
    assert (ended.state, ended.signal) == ("killed", "SIGINT")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_stop_says_goodbye_and_leaves_programs(master, spawn_worker, sig: int):
    worker = spawn_worker(master.port)
    await master.connected()
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    assert worker.stop(sig) == 0
    await wait_for(lambda: master.goodbyes, what="goodbye")
    assert procfs.stat(pid) is not None
    assert "stopping" in worker.stderr()


async def test_end_while_daemon_down_is_recorded(master, spawn_worker, root: Path):
    worker = spawn_worker(master.port)
    await master.connected()
    info = (await master.call(launch("demo", "sh", "-c", "sleep 30; exit 0"))).proc
    worker.kill9()
    os.killpg(info.pid, signal.SIGTERM)
    exit_record = root / "run" / f"{info.launch}.exit"
    await wait_for(exit_record.exists, what="the shim's exit record")

    spawn_worker(master.port)
    reg = await master.connected(registers=2)
    (ended,) = reg.procs
    assert (ended.state, ended.signal) == ("killed", "SIGTERM")


async def test_dead_pid_without_exit_record_is_unknown(master, spawn_worker, root: Path):
    run = root / "run"
    run.mkdir(parents=True)
    rec = records.LaunchRecord(
        launch="20260101-000000.000-dead",
        pid=exited_pid(),
        shim=exited_pid(),
        shim_start=1,
        app="demo",
        argv=["gone"],
        started_at=time.time() - 60,
        start=1,
        boot_id=procfs.boot_id(),
    )
    records.save_launch(run, rec)
    spawn_worker(master.port)
    reg = await master.connected()
    (info,) = reg.procs
    assert (info.state, info.reason) == ("unknown", "ended while unobserved")
    saved = records.load_launch(run / f"{rec.launch}.json")
    assert saved is not None and saved.unknown_at is not None


async def test_reused_pid_is_not_taken_for_ours(master, spawn_worker, root: Path):
    run = root / "run"
    run.mkdir(parents=True)
    me = procfs.stat(os.getpid())
    rec = records.LaunchRecord(
        launch="20260101-000000.000-reuse",
        pid=os.getpid(),  # alive, but started at another time than recorded
        shim=os.getpid(),
        shim_start=me.start + 1,
        app="demo",
        argv=["x"],
        started_at=time.time() - 60,
        start=me.start + 1,
        boot_id=procfs.boot_id(),
    )
    records.save_launch(run, rec)
    spawn_worker(master.port)
    reg = await master.connected()
    assert [p.state for p in reg.procs] == ["unknown"]


async def test_other_boot_is_unknown(master, spawn_worker, root: Path):
    run = root / "run"
    run.mkdir(parents=True)
    me = procfs.stat(os.getpid())
    rec = records.LaunchRecord(
        launch="20260101-000000.000-boot",
        pid=os.getpid(),
        shim=os.getpid(),
        shim_start=me.start,
        app="demo",
        argv=["x"],
        started_at=time.time() - 60,
        start=me.start,
        boot_id="another-boot",
    )
    records.save_launch(run, rec)
    spawn_worker(master.port)
    reg = await master.connected()
    assert [p.state for p in reg.procs] == ["unknown"]


async def test_shim_killed_program_watched_then_unknown(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    shim = psutil.Process(pid).ppid()
    os.kill(shim, signal.SIGKILL)
    # The worker now watches the program itself: still alive.
    await wait_for(lambda: gone(shim), what="the shim's end")
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs[0].state in ("running", "sleeping")  # maybe still starting up
    os.killpg(pid, signal.SIGKILL)
    ended = await wait_for(lambda: master.ended(pid), what="unrecorded end")
    assert ended.state == "unknown"


async def test_reconnect_after_master_drops(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    await master.drop()
    reg = await master.connected(registers=2)
    assert [p.pid for p in reg.procs] == [pid]
    assert procfs.stat(pid) is not None
