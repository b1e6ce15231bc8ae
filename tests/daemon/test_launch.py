"""Launching programs and learning how they end, on a real worker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from corral.daemon import procfs
from corral.transport import beats
from corral.transport import messages as m
from corral.transport.connection import CallError
from tests.daemon.harness import FakeMaster, wait_for


def launch(app: str, *argv: str, **env: str):
    return lambda i: m.Launch(id=i, app=app, argv=list(argv), env=env)


async def start(master: FakeMaster, spawn_worker) -> m.Register:
    spawn_worker(master.port)
    return await master.connected()


async def test_register_and_heartbeats(master, spawn_worker, root: Path):
    reg = await start(master, spawn_worker)
    assert reg.facts.name == "w1"
    assert reg.facts.root == str(root.resolve())
    assert reg.facts.boot_id == procfs.boot_id()
    assert reg.facts.ssh_host == "127.0.0.1"
    assert reg.facts.cpus >= 1 and reg.facts.mem_total > 0
    assert reg.procs == [] and reg.apps == []
    await wait_for(lambda: len(master.beats) >= 2, what="two heartbeats")
    first, second = master.beats[:2]
    assert second.seq == first.seq + 1
    assert second.metrics.mem_total > 0


async def test_beats_keep_to_the_masters_grid_across_reconnects(master, spawn_worker):
    """Each beat comes at the master's k*H + the node's offset in the announced window,
    whenever the connection was made (transport.beats)."""
    master.heartbeat, master.beat_window = 0.5, 0.02
    at = beats.offset("w1", master.beat_window)

    def late(t: float) -> float:  # after the node's slot (negative: before it)
        h = master.heartbeat
        return (t - at + h / 2) % h - h / 2

    await start(master, spawn_worker)
    for connection in range(2):
        first = len(master.beat_times)
        await wait_for(lambda n=first: len(master.beat_times) >= n + 3, what="three beats")
        times = master.beat_times[first : first + 3]
        # the Welcome's trip and the frame's: milliseconds (a busy machine: tens)
        assert all(-0.005 <= late(t) <= 0.1 for t in times), [late(t) for t in times]
        if connection == 0:
            await asyncio.sleep(0.13)  # off the grid: a phase of its own, were it kept
            await master.drop()
            await master.connected(registers=2)


async def test_launch_sleep_runs_in_its_own_session(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    reply = await master.call(launch("demo", "sleep", "30", FOO="bar"))
    info = reply.proc
    assert info.state in ("running", "sleeping")
    proc = psutil.Process(info.pid)
    # The reply comes as the seed starts its exec: the pid is already the program's.
    await wait_for(lambda: proc.cmdline() == ["sleep", "30"], what="the exec")
    assert os.getpgid(info.pid) == info.pid and os.getsid(info.pid) == info.pid
    env = proc.environ()
    assert env["FOO"] == "bar"
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(root.resolve() / "apps/demo/lib")
    assert "CORRAL_TOKEN" not in env
    assert proc.cwd() == str(root.resolve() / "apps/demo")
    assert (root / "apps/demo/logs" / f"{info.launch}.log").exists()
    # The shim writes the launch record once the seed has execed.
    await wait_for((root / "run" / f"{info.launch}.json").exists, what="launch record")
    shim = psutil.Process(proc.ppid())
    assert shim.name() == "corral-shim"
    status = await master.call(lambda i: m.Status(id=i))
    assert [p.pid for p in status.procs] == [info.pid]
    await wait_for(
        lambda: any(s.pid == info.pid for b in master.beats for s in b.procs), what="sample"
    )


async def test_exit_code_and_output(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    reply = await master.call(launch("demo", "sh", "-c", "echo hi; echo oops >&2; exit 3"))
    pid = reply.proc.pid
    ended = await wait_for(lambda: master.ended(pid), what="exit event")
    assert (ended.state, ended.exit_code, ended.reason) == ("exited", 3, "exited 3")
    assert ended.ended_at >= ended.started_at
    log = (root / "apps/demo/logs" / f"{ended.launch}.log").read_text()
    assert log == "hi\noops\n"
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs[0].state == "exited" and status.procs[0].exit_code == 3


async def test_a_program_killed_before_its_exec_still_has_its_log(master, spawn_worker, root: Path):
    """The reply comes before the seed's exec; the log must exist by then, not after."""
    await start(master, spawn_worker)
    reply = await master.call(launch("demo", "sleep", "30"))
    log = root / "apps/demo/logs" / f"{reply.proc.launch}.log"
    assert log.exists()  # before anything else happened: no wait
    os.kill(reply.proc.pid, 9)  # at once, most often before the seed reaches its exec
    ended = await wait_for(lambda: master.ended(reply.proc.pid), what="kill event")
    assert ended.reason == "killed by SIGKILL"
    assert log.exists() and log.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL", "SIGTERM"])
async def test_signal_kills_with_reason(master, spawn_worker, sig: str):
    await start(master, spawn_worker)
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    reply = await master.call(lambda i: m.Signal(id=i, pid=pid, signal=sig))
    assert reply.delivered
    ended = await wait_for(lambda: master.ended(pid), what="kill event")
    assert (ended.state, ended.signal) == ("killed", sig)
    assert ended.reason == f"killed by {sig}"
    again = await master.call(lambda i: m.Signal(id=i, pid=pid, signal="SIGKILL"))
    assert not again.delivered
    assert again.message == f"w1:{pid} already killed by {sig}"


async def test_stop_and_continue(master, spawn_worker):
    await start(master, spawn_worker)
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    stopped = await master.call(lambda i: m.Signal(id=i, pid=pid, signal="SIGSTOP"))
    assert stopped.delivered
    await wait_for(lambda: procfs.stat(pid).state == "stopped")
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs[0].state == "stopped"
    await master.call(lambda i: m.Signal(id=i, pid=pid, signal="SIGCONT"))
    await wait_for(lambda: procfs.stat(pid).state == "sleeping")


async def test_segfault_reported(master, spawn_worker):
    await start(master, spawn_worker)
    pid = (await master.call(launch("demo", "sh", "-c", "kill -SEGV $$"))).proc.pid
    ended = await wait_for(lambda: master.ended(pid), what="segv event")
    assert (ended.state, ended.signal) == ("killed", "SIGSEGV")
    assert ended.reason.startswith("killed by SIGSEGV")


async def test_signal_errors(master, spawn_worker):
    await start(master, spawn_worker)
    with pytest.raises(CallError, match="no such process: 999999"):
        await master.call(lambda i: m.Signal(id=i, pid=999999, signal="SIGINT"))
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    with pytest.raises(CallError, match="unknown signal 'SIGFOO'"):
        await master.call(lambda i: m.Signal(id=i, pid=pid, signal="SIGFOO"))


async def test_missing_program_leaves_no_record(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    with pytest.raises(CallError, match="cannot execute 'nosuch-prog': No such file or directory"):
        await master.call(launch("demo", "nosuch-prog", "x"))
    assert list((root / "run").iterdir()) == []
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs == []


async def test_unexecutable_program_refused_before_anything_starts(
    master, spawn_worker, root: Path
):
    await start(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    bad = root / "apps/demo/bin/bad"
    bad.write_bytes(b"\x7fELF garbage")
    bad.chmod(0o755)
    with pytest.raises(CallError, match="cannot execute 'bad': Exec format error"):
        await master.call(launch("demo", "bad"))
    assert list((root / "run").iterdir()) == []
    assert list((root / "apps/demo/logs").iterdir()) == []
    assert (await master.call(lambda i: m.Status(id=i))).procs == []


async def test_exec_failing_after_the_reply_ends_with_its_reason(master, spawn_worker, root: Path):
    # One argument over the kernel's 128 KiB limit: only the exec itself says E2BIG.
    worker = spawn_worker(master.port)
    await master.connected()
    info = (await master.call(launch("demo", "true", "x" * 200_000))).proc
    ended = await wait_for(lambda: master.ended(info.pid), what="the end of the failed exec")
    assert (ended.state, ended.exit_code) == ("exited", 126)
    log = (root / "apps/demo/logs" / f"{info.launch}.log").read_text()
    assert log == "corral: cannot execute 'true': Argument list too long\n"
    await wait_for(lambda: "Argument list too long" in worker.stderr(), what="the worker's log")
    assert ended.max_rss == 0  # the seed's memory is not reported as the program's


async def test_spec_too_large_for_the_shims_pipe_is_refused(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    big = {"BLOB": "x" * (1 << 20)}  # a frame may carry it; the shim's 1 MiB pipe may not
    with pytest.raises(CallError, match="command line and environment too large"):
        await master.call(lambda i: m.Launch(id=i, app="demo", argv=["true"], env=big))
    assert (await master.call(lambda i: m.Status(id=i))).procs == []
    assert list((root / "run").iterdir()) == []
    # The refused launch cost a spare, not the next launch.
    pid = (await master.call(launch("demo", "sh", "-c", "exit 5"))).proc.pid
    ended = await wait_for(lambda: master.ended(pid), what="the next launch's end")
    assert ended.reason == "exited 5"


async def test_program_found_in_app_bin_first(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    prog = root / "apps/demo/bin/sleep"
    prog.write_text("#!/bin/sh\necho from-bin\n")
    prog.chmod(0o755)
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    ended = await wait_for(lambda: master.ended(pid), what="exit")
    log = (root / "apps/demo/logs" / f"{ended.launch}.log").read_text()
    assert log == "from-bin\n"


async def test_bad_launch_requests(master, spawn_worker, root: Path):
    await start(master, spawn_worker)
    for app in ("../x", "a/b", "", "x" * 65, ".."):
        with pytest.raises(CallError, match="invalid app name"):
            await master.call(launch(app, "true"))
    with pytest.raises(CallError, match="empty command line"):
        await master.call(launch("demo"))
    with pytest.raises(CallError, match="NUL byte"):
        await master.call(launch("demo", "echo", "a\0b"))
    with pytest.raises(CallError, match="bad environment variable 'A=B'"):
        await master.call(lambda i: m.Launch(id=i, app="demo", argv=["true"], env={"A=B": "1"}))
    assert not (root / "apps").exists()
    assert (await master.call(lambda i: m.Status(id=i))).procs == []


async def test_max_rss_from_wait4(master, spawn_worker):
    await start(master, spawn_worker)
    code = "b=bytearray(200*1024*1024); [b.__setitem__(i,1) for i in range(0,len(b),4096)]"
    pid = (await master.call(launch("mem", "python3", "-c", code))).proc.pid
    ended = await wait_for(lambda: master.ended(pid), timeout=20, what="exit")
    assert ended.state == "exited" and ended.exit_code == 0
    assert ended.max_rss >= 200 * 1024 * 1024
    assert ended.cpu_user + ended.cpu_sys > 0
    usage = await master.call(lambda i: m.Usage(id=i))
    assert usage.procs[0].max_rss == ended.max_rss
    assert usage.children_max_rss >= 200 * 1024 * 1024
    assert usage.children_user + usage.children_sys > 0


async def test_usage_of_live_process(master, spawn_worker):
    await start(master, spawn_worker)
    pid = (await master.call(launch("demo", "sleep", "30"))).proc.pid
    usage = await master.call(lambda i: m.Usage(id=i))
    (info,) = usage.procs
    assert info.pid == pid
    # Memory is the program's own only once the seed has execed: until then, none.
    await wait_for(lambda: procfs.stat(pid) and psutil.Process(pid).name() == "sleep")
    usage = await master.call(lambda i: m.Usage(id=i))
    (info,) = usage.procs
    assert info.pid == pid and info.rss > 0 and info.max_rss >= info.rss
    assert info.max_rss < 8 * 2**20  # sleep's, not the seed's Python


async def test_launches_go_on_when_the_forker_dies(master, spawn_worker):
    worker = spawn_worker(master.port)
    await master.connected()
    first = (await master.call(launch("demo", "sleep", "30"))).proc
    (forker,) = _forkers(worker.pid)
    forker.kill()
    forker.wait(5)
    # The next launch starts a new forker and runs; the first program is still ours.
    second = (await master.call(launch("demo", "sh", "-c", "exit 4"))).proc
    assert second.pid != first.pid
    ended = await wait_for(lambda: master.ended(second.pid), what="exit of the second")
    assert ended.reason == "exited 4"
    await wait_for(lambda: "forker" in worker.stderr(), what="the worker's log line")
    # A new forker is up (the launch itself may have used a spare the old one left).
    (new,) = await wait_for(lambda: _forkers(worker.pid), what="a new forker")
    assert new.pid != forker.pid
    status = await master.call(lambda i: m.Status(id=i))
    assert {p.pid: p.state for p in status.procs}[first.pid] in ("running", "sleeping")


def _forkers(worker_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(worker_pid).children() if p.name() == "corral-forker"]


async def test_a_program_ending_before_any_heartbeat_has_its_own_max_rss(spawn_worker):
    # Heartbeats far apart: only the sample taken right after the launch
    # can know this program's memory (its wait4 peak is the shim's).
    master = await FakeMaster(heartbeat=30.0).start()
    try:
        spawn_worker(master.port)
        await master.connected()
        pid = (await master.call(launch("brief", "sleep", "0.1"))).proc.pid
        ended = await wait_for(lambda: master.ended(pid), what="exit")
        assert ended.state == "exited"
        # Its own, loaded: not the seed's ~10 MB, nor the few KiB at the exec.
        assert 256 * 1024 <= ended.max_rss < 8 * 2**20
    finally:
        await master.close()
