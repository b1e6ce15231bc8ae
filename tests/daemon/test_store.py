"""Apps on disk: prepare, files and hashes, removal confined to ROOT."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.transport import messages as m
from corral.transport.connection import CallError
from tests.daemon.harness import FakeMaster, wait_for


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def prepared(master: FakeMaster, spawn_worker, app: str = "demo") -> Path:
    spawn_worker(master.port)
    await master.connected()
    reply = await master.call(lambda i: m.PrepareApp(id=i, app=app))
    return Path(reply.path)


async def test_prepare_files_and_hashes(master, spawn_worker, root: Path, tmp_path: Path):
    app_dir = await prepared(master, spawn_worker)
    assert app_dir == root.resolve() / "apps/demo"
    assert sorted(p.name for p in app_dir.iterdir()) == ["bin", "lib", "logs"]
    (app_dir / "bin/prog").write_bytes(b"program")
    (app_dir / "bin/prog").chmod(0o755)
    (app_dir / "lib/libx.so.1.2").write_bytes(b"library")
    (app_dir / "lib/libx.so.1").symlink_to("libx.so.1.2")
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    (app_dir / "lib/leak.so").symlink_to(outside)

    reply = await master.call(lambda i: m.Files(id=i))
    (app,) = reply.apps
    assert app.name == "demo" and app.procs_alive == 0
    files = {f.path: f for f in app.files}
    assert sorted(files) == ["bin/prog", "lib/libx.so.1", "lib/libx.so.1.2"]
    assert files["bin/prog"].sha256 == sha(b"program") and files["bin/prog"].mode == 0o755
    assert files["lib/libx.so.1"].sha256 == sha(b"library")
    assert files["lib/libx.so.1.2"].size == len(b"library")

    paths = ["bin/prog", "lib/missing", "../../../etc/passwd", "/etc/passwd", "lib/leak.so"]
    hashes = await master.call(lambda i: m.Hashes(id=i, app="demo", paths=paths))
    assert hashes.hashes == {"bin/prog": sha(b"program")}

    # The cache is keyed by inode, size and mtime: a rewrite is seen.
    (app_dir / "bin/prog").write_bytes(b"program v2")
    hashes = await master.call(lambda i: m.Hashes(id=i, app="demo", paths=["bin/prog"]))
    assert hashes.hashes == {"bin/prog": sha(b"program v2")}


async def test_files_of_unknown_app(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    with pytest.raises(CallError, match="no such app: nope"):
        await master.call(lambda i: m.Files(id=i, app="nope"))
    with pytest.raises(CallError, match="invalid app name"):
        await master.call(lambda i: m.Hashes(id=i, app="../x", paths=["bin/x"]))


async def test_remove_refused_while_running_then_forced(master, spawn_worker, root: Path):
    app_dir = await prepared(master, spawn_worker)
    (app_dir / "bin/prog").write_bytes(b"x")
    pid = (await master.call(lambda i: m.Launch(id=i, app="demo", argv=["sleep", "30"]))).proc.pid
    with pytest.raises(CallError, match="app demo has 1 running processes; use --force"):
        await master.call(lambda i: m.Remove(id=i, app="demo"))
    assert (app_dir / "bin/prog").exists()

    reply = await master.call(lambda i: m.Remove(id=i, app="demo", force=True))
    assert reply.stopped == [pid]
    assert reply.removed == ["apps/demo/bin", "apps/demo/lib"]
    ended = await wait_for(lambda: master.ended(pid))
    assert (ended.state, ended.signal) == ("killed", "SIGINT")
    assert not (app_dir / "bin").exists() and (app_dir / "logs").is_dir()


async def test_forced_remove_kills_what_ignores_sigint(master, spawn_worker, root: Path):
    await prepared(master, spawn_worker)
    script = "trap '' INT; echo ready; while :; do sleep 0.05; done"
    info = (await master.call(lambda i: m.Launch(id=i, app="demo", argv=["sh", "-c", script]))).proc
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    await wait_for(lambda: log.exists() and log.read_text() == "ready\n", what="trap set")
    reply = await master.call(lambda i: m.Remove(id=i, app="demo", force=True, logs=True))
    assert reply.stopped == [info.pid]
    assert reply.removed[-1] == "apps/demo"
    assert not (root / "apps/demo").exists()
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs == []  # its log is gone, so is its record


async def test_remove_refuses_bad_names_and_unknown_apps(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    for app in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(CallError, match="invalid app name"):
            await master.call(lambda i, app=app: m.Remove(id=i, app=app, force=True))
    with pytest.raises(CallError, match="no such app: ghost"):
        await master.call(lambda i: m.Remove(id=i, app="ghost"))


async def test_remove_never_follows_symlinks(master, spawn_worker, root: Path, tmp_path: Path):
    app_dir = await prepared(master, spawn_worker)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (app_dir / "bin").rmdir()
    (app_dir / "bin").symlink_to(outside)
    (app_dir / "lib/escape").symlink_to(outside)
    reply = await master.call(lambda i: m.Remove(id=i, app="demo", logs=True))
    assert "apps/demo/bin" in reply.removed
    assert (outside / "precious").read_text() == "keep me"
    assert not (root / "apps/demo").exists()

    (root / "apps/linked").symlink_to(outside)
    with pytest.raises(CallError, match="symlink"):
        await master.call(lambda i: m.Remove(id=i, app="linked", logs=True))
    assert (outside / "precious").read_text() == "keep me"
    with pytest.raises(CallError, match="symlink"):
        await master.call(lambda i: m.PrepareApp(id=i, app="linked"))
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
