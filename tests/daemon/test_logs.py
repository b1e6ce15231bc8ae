"""Log tails, reads from an offset, and follow streams with offsets and eof."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.daemon import logs
from corral.daemon.beneath import Beneath
from corral.transport import messages as m
from corral.transport.connection import CallError
from tests.daemon.harness import FakeMaster, wait_for

# Prints 20 lines, then waits for a file named "go" in its app dir.
WAITER = "seq 1 20; while [ ! -e go ]; do sleep 0.02; done; echo after"


async def launch(master: FakeMaster, script: str, app: str = "demo") -> m.ProcInfo:
    reply = await master.call(lambda i: m.Launch(id=i, app=app, argv=["sh", "-c", script]))
    return reply.proc


def joined(chunks: list[m.LogChunk], start: int) -> bytes:
    """The chunks' data, checking they are contiguous from ``start``."""
    out = b""
    for chunk in chunks:
        assert chunk.offset == start + len(out), "a gap or an overlap between chunks"
        out += chunk.data
    return out


async def test_tail_offset_and_follow_to_eof(master, spawn_worker, root: Path):
    spawn_worker(master.port)
    await master.connected()
    info = await launch(master, WAITER)
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    await wait_for(lambda: log.exists() and log.read_bytes().endswith(b"20\n"))
    whole = log.read_bytes()

    tail = await master.call(lambda i: m.Logs(id=i, pid=info.pid, tail=5))
    assert tail.data == b"16\n17\n18\n19\n20\n"
    assert tail.offset == whole.index(b"16\n") and not tail.eof

    at = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=whole.index(b"19\n")))
    assert at.data == b"19\n20\n"

    rid = master.calls.next_id() + 1  # the id the next call will use
    first = await master.call(lambda i: m.Logs(id=i, pid=info.pid, tail=0, follow=True))
    assert first.id == rid and first.data == b"" and first.offset == len(whole)
    (root / "apps/demo/go").touch()
    await wait_for(lambda: master.chunks[rid] and master.chunks[rid][-1].eof, what="eof")
    assert joined(master.chunks[rid], len(whole)) == b"after\n"

    done = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0))
    assert done.eof and done.data == whole + b"after\n"


async def test_follow_from_offset_of_a_big_log(master, spawn_worker, root: Path):
    spawn_worker(master.port)
    await master.connected()
    size = 700_000
    info = await launch(master, f"head -c {size} /dev/zero | tr '\\0' x; echo")
    await wait_for(lambda: master.ended(info.pid), what="end")
    part = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0))
    assert part.offset == 0 and len(part.data) == logs.CHUNK and not part.eof
    rid = master.calls.next_id() + 1
    first = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=100, follow=True))
    await wait_for(lambda: master.chunks[rid] and master.chunks[rid][-1].eof, what="eof")
    data = joined([first, *master.chunks[rid]], 100)
    assert data == b"x" * (size - 100) + b"\n"


async def test_unfollow_stops_the_stream(master, spawn_worker, root: Path):
    spawn_worker(master.port)
    await master.connected()
    info = await launch(master, "while :; do echo tick; sleep 0.02; done")
    rid = master.calls.next_id() + 1
    await master.call(lambda i: m.Logs(id=i, pid=info.pid, tail=1, follow=True))
    await wait_for(lambda: len(master.chunks[rid]) >= 2, what="streamed chunks")
    reply = await master.call(lambda i: m.Unfollow(id=i, stream=rid))
    assert isinstance(reply, m.Ok)
    count = len(master.chunks[rid])
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    grown = log.stat().st_size + 50
    await wait_for(lambda: log.stat().st_size > grown, what="more output")
    assert len(master.chunks[rid]) == count
    assert not any(c.eof for c in master.chunks[rid])


async def test_logs_of_unknown_pid(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    with pytest.raises(CallError, match="no such process: 4242424"):
        await master.call(lambda i: m.Logs(id=i, pid=4242424))


@pytest.fixture
def tmp_fd(tmp_path: Path) -> Iterator[int]:
    """``tmp_path``, open: logs are opened by a walk from a directory fd."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_tail_reads_backwards(tmp_path: Path, tmp_fd: int):
    path = tmp_path / "x.log"
    log = Beneath(tmp_fd, ("x.log",))
    lines = [f"line {i}\n".encode() for i in range(100_000)]
    path.write_bytes(b"".join(lines))
    offset, data = logs.tail(log, 3)
    assert data == b"".join(lines[-3:])
    assert offset == path.stat().st_size - len(data)
    path.write_bytes(b"a\nb\nc")  # no final newline: "c" is the last line
    assert logs.tail(log, 2) == (2, b"b\nc")
    assert logs.tail(log, 10) == (0, b"a\nb\nc")
    assert logs.tail(log, 0) == (5, b"")
    assert logs.tail(Beneath(tmp_fd, ("missing.log",)), 5) == (0, b"")


async def test_follow_waits_for_a_slow_reader(tmp_path: Path, tmp_fd: int):
    """Back-pressure: while a send is pending, nothing more is read or queued."""
    path = tmp_path / "x.log"
    path.write_bytes(b"x" * (3 * logs.CHUNK + 10))
    sent: list[m.LogChunk] = []
    gate = asyncio.Event()

    async def slow_send(msg: m.Message) -> None:
        assert isinstance(msg, m.LogChunk)
        sent.append(msg)
        await gate.wait()

    streams = logs.LogStreams(slow_send)
    ended = asyncio.Event()
    streams.open(7, Beneath(tmp_fd, ("x.log",)), 0, ended)
    await wait_for(lambda: sent, what="first chunk")
    for _ in range(50):
        await asyncio.sleep(0)  # give the stream every chance to run ahead
    assert len(sent) == 1
    ended.set()
    gate.set()
    await wait_for(lambda: sent[-1].eof, what="eof")
    assert joined(sent, 0) == path.read_bytes()
    assert len(streams) == 0
    await streams.close_all()
