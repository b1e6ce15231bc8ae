"""No path escapes ROOT, whenever it is swapped; logs and records are private.

A program that corral runs can write to ROOT, so each test puts a real
symlink where a directory or file was, after its first use, and checks
that the worker refuses with one line naming the path, and that nothing
outside ROOT was read, written, executed or deleted.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.daemon import beneath, records, shim
from corral.daemon.beneath import StoreError
from corral.daemon.forker import Forker
from corral.daemon.store import AppStore
from corral.daemon.supervisor import Supervisor
from corral.transport import messages as m
from corral.transport.connection import CallError
from tests.daemon.harness import FakeMaster, wait_for
from tests.procs import gone

SECRET = b"root:$6$not-for-the-master\n"


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def starts(message: str) -> str:
    return f"^{re.escape(message)}"


def launch(app: str, *argv: str):
    return lambda i: m.Launch(id=i, app=app, argv=list(argv))


def swap_for_symlink(path: Path, target: Path) -> Path:
    """Move ``path`` aside (still inside ROOT) and put a symlink to ``target`` in its place."""
    aside = path.with_name(path.name + ".old")
    path.rename(aside)
    path.symlink_to(target)
    return aside


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside ROOT that nothing may touch."""
    out = tmp_path / "outside"
    out.mkdir()
    return out


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (what must not change)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


async def worker(master: FakeMaster, spawn_worker) -> None:
    spawn_worker(master.port)
    await master.connected()


async def ended(master: FakeMaster, info: m.ProcInfo) -> m.ProcInfo:
    return await wait_for(lambda: master.ended(info.pid), what=f"the end of {info.argv}")


# ---------------------------------------------------------------- logs


async def test_logs_refuse_a_log_swapped_for_a_symlink(
    master, spawn_worker, root: Path, outside: Path
):
    await worker(master, spawn_worker)
    info = (await master.call(launch("demo", "sh", "-c", "echo mine"))).proc
    await ended(master, info)
    secret = outside / "shadow"
    secret.write_bytes(SECRET)
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    assert log.read_bytes() == b"mine\n"
    log.unlink()
    log.symlink_to(secret)

    refusal = f"refusing apps/demo/logs/{info.launch}.log: it is a symlink"
    requests = [
        lambda i: m.Logs(id=i, pid=info.pid, tail=10),
        lambda i: m.Logs(id=i, pid=info.pid, offset=0),
        lambda i: m.Logs(id=i, pid=info.pid, offset=0, follow=True),
    ]
    for make in requests:
        with pytest.raises(CallError) as refused:
            await master.call(make)
        assert str(refused.value) == refusal
    assert not any(c.data for chunks in master.chunks.values() for c in chunks)


async def test_logs_refuse_a_logs_dir_swapped_for_a_symlink(
    master, spawn_worker, root: Path, outside: Path
):
    await worker(master, spawn_worker)
    info = (await master.call(launch("demo", "sh", "-c", "echo mine"))).proc
    await ended(master, info)
    (outside / f"{info.launch}.log").write_bytes(SECRET)
    swap_for_symlink(root / "apps/demo/logs", outside)
    with pytest.raises(CallError, match=exactly("refusing apps/demo/logs: it is a symlink")):
        await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0, follow=True))
    assert not master.chunks


async def test_a_follow_keeps_reading_the_file_it_opened(master, spawn_worker, root: Path, outside):
    await worker(master, spawn_worker)
    wait = "while [ ! -e {0} ]; do sleep 0.02; done"
    script = f"echo one; {wait.format('go1')}; echo two; {wait.format('go2')}; echo three"
    info = (await master.call(launch("demo", "sh", "-c", script))).proc
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    await wait_for(lambda: log.exists() and log.read_bytes() == b"one\n", what="first line")
    rid = master.calls.next_id() + 1
    first = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0, follow=True))
    assert first.data == b"one\n"
    (root / "apps/demo/go1").touch()
    await wait_for(lambda: master.chunks[rid], what="the stream's first chunk")
    # The program (it may write to ROOT) moves its log away and leaves a symlink.
    secret = outside / "shadow"
    secret.write_bytes(SECRET)
    swap_for_symlink(log, secret)
    (root / "apps/demo/go2").touch()
    await wait_for(lambda: master.chunks[rid][-1].eof, what="eof")
    assert b"".join(c.data for c in master.chunks[rid]) == b"two\nthree\n"


# ---------------------------------------------------------------- launches


async def test_launch_refuses_logs_swapped_after_first_use(
    master, spawn_worker, root: Path, outside: Path
):
    await worker(master, spawn_worker)
    first = (await master.call(launch("demo", "true"))).proc
    await ended(master, first)
    swap_for_symlink(root / "apps/demo/logs", outside)
    with pytest.raises(CallError, match=exactly("refusing apps/demo/logs: it is a symlink")):
        await master.call(launch("demo", "sh", "-c", "echo leaked"))
    assert list(outside.iterdir()) == []
    status = await master.call(lambda i: m.Status(id=i))
    assert [p.pid for p in status.procs] == [first.pid]


async def test_launch_refuses_bin_swapped_after_first_use(
    master, spawn_worker, root: Path, outside: Path
):
    await worker(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    mine = root / "apps/demo/bin/prog"
    mine.write_text("#!/bin/sh\necho mine\n")
    mine.chmod(0o755)
    first = await ended(master, (await master.call(launch("demo", "prog"))).proc)
    assert (root / "apps/demo/logs" / f"{first.launch}.log").read_text() == "mine\n"

    marker = outside / "ran"
    theirs = outside / "prog"
    theirs.write_text(f"#!/bin/sh\ntouch {marker}\n")
    theirs.chmod(0o755)
    swap_for_symlink(root / "apps/demo/bin", outside)
    with pytest.raises(CallError, match=exactly("refusing apps/demo/bin: it is a symlink")):
        await master.call(launch("demo", "prog"))
    await asyncio.sleep(0.1)  # were it started, the script would have run by now
    assert not marker.exists()


async def test_a_program_symlinked_out_of_the_app_is_refused(
    master, spawn_worker, root: Path, outside: Path
):
    await worker(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    marker = outside / "ran"
    theirs = outside / "prog"
    theirs.write_text(f"#!/bin/sh\ntouch {marker}\n")
    theirs.chmod(0o755)
    (root / "apps/demo/bin/prog").symlink_to(theirs)
    with pytest.raises(
        CallError, match=starts("refusing apps/demo/bin/prog: it leads out of apps/demo")
    ):
        await master.call(launch("demo", "prog"))
    with pytest.raises(
        CallError, match=starts("refusing apps/demo/bin/prog: it leads out of apps/demo")
    ):
        await master.call(launch("demo", "./bin/prog"))
    await asyncio.sleep(0.1)
    assert not marker.exists()


async def test_programs_inside_the_app_run_by_name(master, spawn_worker, root: Path):
    await worker(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    bin_dir = root / "apps/demo/bin"
    # A binary: `ps` shows its own name; it runs from the file in bin/.
    shutil.copy(shutil.which("sleep") or "/bin/sleep", bin_dir / "napper-1.2")
    (bin_dir / "napper").symlink_to("napper-1.2")  # a link inside the app is fine
    info = (await master.call(launch("demo", "napper", "30"))).proc
    proc = psutil.Process(info.pid)
    await wait_for(lambda: proc.cmdline() == ["napper", "30"], what="the exec")
    assert proc.exe() == str(root.resolve() / "apps/demo/bin/napper-1.2")
    assert proc.name() == "napper-1.2"
    assert proc.cwd() == str(root.resolve() / "apps/demo")
    # stdin, and the log twice: no fd of corral's (ROOT's, a directory's) is left open.
    # (Waited for: just after the exec, the loader may hold a library open.)
    fds = f"/proc/{info.pid}/fd"
    await wait_for(lambda: sorted(int(fd) for fd in os.listdir(fds)) == [0, 1, 2], what=fds)
    # A script finds its own directory through $0.
    (bin_dir / "data").write_text("beside me\n")
    script = bin_dir / "show"
    script.write_text('#!/bin/sh\ncat "$(dirname "$0")/data"\n')
    script.chmod(0o755)
    shown = await ended(master, (await master.call(launch("demo", "show"))).proc)
    assert shown.exit_code == 0
    assert (root / "apps/demo/logs" / f"{shown.launch}.log").read_text() == "beside me\n"


# ---------------------------------------------------------------- removal


async def test_rm_refuses_a_symlinked_apps_dir(master, spawn_worker, root: Path, outside: Path):
    await worker(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    for sub in ("bin", "lib", "logs"):
        (outside / "demo" / sub).mkdir(parents=True)
        (outside / "demo" / sub / "precious").write_text("keep me")
    before = tree(outside)
    swap_for_symlink(root / "apps", outside)
    for logs in (True, False):
        with pytest.raises(CallError) as refused:
            await master.call(lambda i, logs=logs: m.Remove(id=i, app="demo", logs=logs))
        assert str(refused.value) == "refusing apps: it is a symlink"
    assert tree(outside) == before
    with pytest.raises(CallError, match=exactly("refusing apps: it is a symlink")):
        await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    with pytest.raises(CallError, match=exactly("refusing apps: it is a symlink")):
        await master.call(launch("demo", "true"))
    assert (await master.call(lambda i: m.Files(id=i))).apps == []
    assert tree(outside) == before


async def test_a_deploy_sweeps_only_dead_uploads(master, spawn_worker, root: Path, outside: Path):
    """Uploads a cut-off deploy left are removed; live ones, links and other files stay."""
    await worker(master, spawn_worker)
    await master.call(lambda i: m.PrepareApp(id=i, app="demo"))
    app = root / "apps" / "demo"
    (outside / "precious").write_bytes(b"keep me")
    dead = [app / "bin" / ".tool.corral-tmp-0a1b2c3d", app / "lib" / ".libx.so.corral-tmp-99"]
    for p in dead:
        p.write_bytes(b"x" * 1000)
        os.utime(p, (time.time() - 120, time.time() - 120))
    live = app / "bin" / ".tool.corral-tmp-feedbeef"  # a deploy still writing
    live.write_bytes(b"y")
    link = app / "lib" / ".escape.corral-tmp-1"
    link.symlink_to(outside / "precious")
    os.utime(link, (1, 1), follow_symlinks=False)
    other = app / "bin" / "tool"  # deployed: never swept, however old
    other.write_bytes(b"z")
    os.utime(other, (1, 1))

    ready = await master.call(lambda i: m.PrepareApp(id=i, app="demo", idle=60))
    assert sorted(ready.swept) == [
        "bin/.tool.corral-tmp-0a1b2c3d (1000 bytes)",
        "lib/.libx.so.corral-tmp-99 (1000 bytes)",
    ]
    assert not any(p.exists() for p in dead)
    assert live.exists() and other.exists() and link.is_symlink()
    assert (outside / "precious").read_bytes() == b"keep me"
    # Without idle (a dry run's caller, an older master) nothing is swept.
    dead[0].write_bytes(b"x")
    os.utime(dead[0], (1, 1))
    assert (await master.call(lambda i: m.PrepareApp(id=i, app="demo"))).swept == []
    assert dead[0].exists()


async def test_a_bundle_send_sweeps_only_dead_ones(master, spawn_worker, root: Path):
    """What sends that died left in bundles/incoming goes; a send in progress stays."""
    await worker(master, spawn_worker)
    sha = "ab" * 32
    at = await master.call(lambda i: m.BundleHave(id=i, sha256=sha))
    incoming = root / "bundles" / "incoming"
    assert at.path == f"{incoming}/{sha}" and not at.present
    dead = [incoming / f".{'cd' * 32}.corral-tmp-0a1b", incoming / ("ef" * 32)]
    for p in dead:
        p.write_bytes(b"x" * 10)
        os.utime(p, (time.time() - 120, time.time() - 120))
    live = incoming / f".{sha}.corral-tmp-beef"
    live.write_bytes(b"y")
    stranger = incoming / "notes.txt"  # not an upload's name: never ours to remove
    stranger.write_bytes(b"z")
    os.utime(stranger, (1, 1))
    at = await master.call(lambda i: m.BundleHave(id=i, sha256=sha, idle=60))
    assert not at.present
    assert not any(p.exists() for p in dead)
    assert live.exists() and stranger.exists()


def test_remove_works_by_fds_inside(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    root.mkdir()
    store = AppStore(root)
    try:
        store.ensure("demo")
        (outside / "precious").write_text("keep me")
        (root / "apps/demo/logs/escape").symlink_to(outside)
        (root / "apps/demo/lib/nested").mkdir()
        (root / "apps/demo/lib/nested/escape").symlink_to(outside / "precious")
        removed = store.remove("demo", logs=True)
        assert removed == [f"apps/demo/{s}" for s in ("bin", "lib", "logs")] + ["apps/demo"]
        assert not (root / "apps/demo").exists()
        assert (outside / "precious").read_text() == "keep me"
    finally:
        store.close()


# ---------------------------------------------------------------- records


async def test_records_never_go_through_a_symlinked_run(
    master, spawn_worker, root: Path, outside: Path
):
    await worker(master, spawn_worker)
    first = await ended(master, (await master.call(launch("demo", "true"))).proc)
    assert (root / "run" / f"{first.launch}.exit").exists()
    aside = swap_for_symlink(root / "run", outside)
    with pytest.raises(CallError, match=exactly("refusing run: it is a symlink")):
        await master.call(launch("demo", "true"))
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in aside.iterdir()) == [
        f"{first.launch}.exit",
        f"{first.launch}.json",
    ]


async def test_a_daemon_refuses_to_start_on_a_symlinked_run(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "run").symlink_to(outside)
    store = AppStore(root)
    sup = Supervisor(root, store, "w1", log=lambda _: None)
    try:
        with pytest.raises(OSError, match=exactly("refusing run: it is a symlink")):
            sup.start()
    finally:
        sup.close()
        store.close()
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------- the seed and the shim


@pytest.fixture
async def forker_root(tmp_path: Path) -> Iterator[tuple[Forker, AppStore]]:
    """A real forker for a fresh ROOT with app "demo" and ROOT/run."""
    root = tmp_path / "root"
    root.mkdir()
    store = AppStore(root)
    records.RunDir(store.fd).create()
    store.ensure("demo")
    forker = Forker(log=lambda _: None)
    forker.start(store.fd)
    yield forker, store
    forker.close()
    store.close()


@pytest.mark.parametrize("swapped", ["apps/demo", "apps/demo/bin", "apps/demo/logs"])
async def test_the_seed_walks_again_when_it_execs(forker_root, outside: Path, swapped: str):
    """Swapped between the daemon's checks and the seed's exec: the seed refuses too."""
    forker, store = forker_root
    marker = outside / "ran"
    prog = store.root / "apps/demo/bin/prog"
    prog.write_text(f"#!/bin/sh\ntouch {marker}\n")
    prog.chmod(0o755)
    found = store.program("demo", "prog", os.defpath)  # the daemon's checks pass
    assert found.beneath == ("apps", "demo", "bin", "prog") and found.script
    shutil.copytree(store.root / swapped, outside, dirs_exist_ok=True)
    swap_for_symlink(store.root / swapped, outside)

    spec = shim.Spec(
        launch="20260101-000000.000-seed",
        app="demo",
        exe=found.path,
        beneath=list(found.beneath),
        script=found.script,
        argv=["prog"],
        env={},
        started_at=time.time(),
        boot_id="test",
    )
    spare = await forker.take(5.0)
    try:
        shim.hand(spare, shim.encode_spec(spec))
        report = await asyncio.to_thread(_read_report, spare.report)
    finally:
        os.close(spare.report)
        os.close(spare.pidfd)
    # O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP for a file)
    assert shim.parse_report(report) in (errno.ENOTDIR, errno.ELOOP)
    await wait_for(lambda: gone(spare.pid), what="the shim's end")
    ex = records.load_exit(store.root / "run", spec.launch)
    assert ex is not None and os.WEXITSTATUS(ex.status) == 126
    assert not marker.exists()
    assert not (outside / f"{spec.launch}.log").exists()


async def test_the_shim_writes_no_record_through_a_symlinked_run(forker_root, outside: Path):
    forker, store = forker_root
    found = store.program("demo", "true", os.defpath)
    swap_for_symlink(store.root / "run", outside)
    spec = shim.Spec(
        launch="20260101-000000.000-runs",
        app="demo",
        exe=found.path,
        beneath=[],
        script=False,
        argv=["true"],
        env={},
        started_at=time.time(),
        boot_id="test",
    )
    spare = await forker.take(5.0)
    try:
        shim.hand(spare, shim.encode_spec(spec))
        assert await asyncio.to_thread(_read_report, spare.report) == b""  # execed
    finally:
        os.close(spare.report)
        os.close(spare.pidfd)
    await wait_for(lambda: gone(spare.pid), what="the shim's end")
    assert list(outside.iterdir()) == []
    assert list((store.root / "run.old").iterdir()) == []


def _read_report(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 256):
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- modes


async def test_logs_and_records_are_private(master, spawn_worker, root: Path):
    await worker(master, spawn_worker)
    info = await ended(master, (await master.call(launch("demo", "sh", "-c", "echo hi"))).proc)
    killed = (await master.call(launch("demo", "sleep", "30"))).proc
    await wait_for((root / "run" / f"{killed.launch}.json").exists, what="launch record")
    private = [
        root / "apps/demo/logs" / f"{info.launch}.log",
        root / "run" / f"{info.launch}.json",
        root / "run" / f"{info.launch}.exit",
        root / "apps/demo/logs" / f"{killed.launch}.log",
        root / "run" / f"{killed.launch}.json",
    ]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in private} == {
        p.name: "0o600" for p in private
    }
    for d in (root / "run", root / "apps/demo/logs"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


# ---------------------------------------------------------------- the walks themselves


def test_open_dir_refuses_symlinks_and_names_them(tmp_path: Path, outside: Path):
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = beneath.open_dir(base, ["a", "b"], create=True)
        os.close(fd)
        (tmp_path / "a/b").rename(tmp_path / "a/c")
        (tmp_path / "a/b").symlink_to(outside)
        with pytest.raises(StoreError, match=exactly("refusing a/b: it is a symlink")):
            beneath.open_dir(base, ["a", "b"])
        with pytest.raises(StoreError, match=exactly("refusing x/a/b: it is a symlink")):
            beneath.open_dir(base, ["a", "b", "new"], where=["x"], create=True)
        (tmp_path / "file").write_text("")
        with pytest.raises(StoreError, match=exactly("refusing file: it is not a directory")):
            beneath.open_dir(base, ["file"])
        with pytest.raises(FileNotFoundError):
            beneath.open_dir(base, ["missing"])
        with pytest.raises(OSError):
            os.close(beneath.walk(base, ["a", "b"]))  # the raw walk: the kernel's ELOOP
        assert list(outside.iterdir()) == []
    finally:
        os.close(base)


def test_open_beneath_follows_links_only_while_inside(tmp_path: Path, outside: Path):
    (outside / "secret").write_bytes(SECRET)
    app = tmp_path / "app"
    (app / "lib/sub").mkdir(parents=True)
    (app / "lib/libx.so.1.2").write_bytes(b"library")
    (app / "lib/libx.so.1").symlink_to("libx.so.1.2")
    (app / "lib/sub/up").symlink_to("../libx.so.1")
    (app / "lib/abs").symlink_to(outside / "secret")
    (app / "lib/above").symlink_to("../../outside/secret")
    (app / "lib/loop").symlink_to("loop")
    base = os.open(app, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for path, walked in [
            ("lib/libx.so.1", ["lib", "libx.so.1.2"]),
            ("lib/sub/up", ["lib", "libx.so.1.2"]),
            ("./lib/sub/../libx.so.1", ["lib", "libx.so.1.2"]),
        ]:
            fd, names = beneath.open_beneath(base, path)
            assert (os.read(fd, 100), names) == (b"library", walked)
            os.close(fd)
        for path in ("lib/abs", "lib/above", "../outside/secret", "lib/../../outside/secret"):
            with pytest.raises(
                StoreError, match=starts(f"refusing apps/x/{path}: it leads out of")
            ):
                beneath.open_beneath(base, path, where=["apps", "x"])
        with pytest.raises(OSError):
            beneath.open_beneath(base, "lib/loop")
    finally:
        os.close(base)
