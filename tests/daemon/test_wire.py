"""Authentication, hostile or broken masters, and command-line errors."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
from pathlib import Path

import msgspec

from corral.transport import messages as m
from corral.transport.codec import encode
from tests.daemon.harness import REPO, TOKEN, FakeMaster, WorkerProcess, wait_for


async def test_wrong_token_is_refused_and_retried(master, spawn_worker, root: Path):
    worker = spawn_worker(master.port, token="not-the-token")
    await wait_for(lambda: len(master.refusals) >= 2, what="two refused attempts")
    assert master.registers == []
    # Enrollment: the worker proves the token first, and the master refuses it.
    assert "enrollment refused: wrong cluster token" in master.refusals[0]
    assert "handshake with" in worker.stderr() and "wrong cluster token" in worker.stderr()
    assert not (root / "tls" / "node.crt").exists()
    assert not (root / "apps").exists()


async def test_refused_name_is_logged_and_retried(master, spawn_worker):
    master.admit = lambda name: f"name {name} is already in use"
    worker = spawn_worker(master.port)
    await wait_for(lambda: len(master.refusals) >= 2, what="two refusals")
    assert "master refused: name w1 is already in use" in worker.stderr()
    master.admit = lambda name: None
    await master.connected(timeout=10)


async def test_master_without_token_gets_nothing_run(spawn_worker, root: Path):
    """A 'master' that skips the handshake and sends a Launch at once."""
    seen: list[bytes] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode(m.Launch(id=1, app="evil", argv=["touch", "/tmp/pwned"])))
        seen.append(await reader.read(4096))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    try:
        worker = spawn_worker(server.sockets[0].getsockname()[1])
        # It speaks plaintext: the worker's TLS handshake fails, nothing is read as a frame.
        await wait_for(lambda: "cannot reach master" in worker.stderr(), what="refusal")
    finally:
        server.close()
        await server.wait_closed()
    assert not (root / "apps").exists()
    assert list((root / "run").iterdir()) == []


async def test_malformed_frames_close_the_connection_only(master, spawn_worker):
    worker = spawn_worker(master.port)
    await master.connected()
    pid = (await master.call(lambda i: m.Launch(id=i, app="a", argv=["sleep", "30"]))).proc.pid
    assert master.conn is not None
    master.conn.writer.write(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
    reg = await master.connected(registers=2)
    assert [p.pid for p in reg.procs] == [pid]
    assert "bad frame from master" in worker.stderr()

    assert master.conn is not None
    master.conn.writer.write(struct.pack(">I", m.MAX_FRAME + 1))
    await master.connected(registers=3)

    body = msgspec.msgpack.encode({"type": "Launch", "id": 1})  # fields missing
    assert master.conn is not None
    master.conn.writer.write(struct.pack(">I", len(body)) + body)
    await master.connected(registers=4)
    assert worker.proc is not None and worker.proc.poll() is None


async def test_unsupported_request_gets_an_error(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    await master.send_raw(m.Launched(id=99, proc=m.ProcInfo("x", 1, "a", [], "exited", 0.0)))
    await wait_for(lambda: master.others, what="error reply")
    assert master.others == [m.Error(id=99, message="unsupported request: Launched")]
    await master.send_raw(m.Heartbeat(seq=1, metrics=m.Metrics()))  # no id: ignored
    status = await master.call(lambda i: m.Status(id=i))
    assert status.procs == []


async def test_worker_waits_for_a_late_master(spawn_worker):
    fake = FakeMaster()
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    try:
        worker = spawn_worker(port)
        await wait_for(lambda: "cannot reach master" in worker.stderr(), what="refused dial")
        await fake.start(port)
        await fake.connected(timeout=10)
    finally:
        await fake.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "corral.daemon", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_no_token_exits_2(tmp_path: Path):
    res = run_cli("--master", "127.0.0.1:1", "--root", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "corral-worker: no cluster token: pass --token-file or set CORRAL_TOKEN"
    ]


def test_bad_master_exits_2(tmp_path: Path):
    for bad in ("nohost", "host:notaport", "host:70000", ":7070"):
        res = run_cli("--master", bad, "--root", str(tmp_path), env={"CORRAL_TOKEN": TOKEN})
        assert res.returncode == 2
        assert res.stderr.strip() == f"corral-worker: bad --master {bad!r}: expected HOST:PORT"


def test_token_file(tmp_path: Path):
    missing = tmp_path / "nope"
    res = run_cli("--master", "127.0.0.1:1", "--token-file", str(missing))
    assert res.returncode == 2 and "cannot read token file" in res.stderr


async def test_token_file_is_used(master, root: Path, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    worker = WorkerProcess(master.port, root, token="wrong")
    worker.argv = lambda: [  # type: ignore[method-assign]
        *WorkerProcess.argv(worker),
        "--token-file",
        str(token_file),
    ]
    worker.start()
    try:
        await master.connected()
    finally:
        assert worker.stop() == 0
