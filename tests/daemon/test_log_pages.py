"""Bounded log pages: ``Logs(limit=...)`` forwards and ``Logs(before=...)`` backwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.daemon import logs
from corral.daemon.beneath import Beneath
from corral.transport import messages as m
from corral.transport.connection import CallError
from tests.daemon.harness import FakeMaster, wait_for


@pytest.fixture
def tmp_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_the_page_before_an_offset_starts_at_a_line(tmp_path: Path, tmp_fd: int) -> None:
    path = tmp_path / "x.log"
    log = Beneath(tmp_fd, ("x.log",))
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(1000)))
    whole = path.read_bytes()
    end = whole.index(b"line 500\n")
    offset, data, size = logs.read_before(log, end, cap=100)
    assert size == len(whole) and offset + len(data) == end
    assert len(data) <= 100 and data.startswith(b"line ") and whole[offset - 1 : offset] == b"\n"
    assert data.endswith(b"line 499\n")
    # From the start of the file: the page begins it, whatever it holds.
    assert logs.read_before(log, 9, cap=100) == (0, whole[:9], len(whole))
    # Past the end: the page that ends the file.
    offset, data, _ = logs.read_before(log, 10**12, cap=50)
    assert offset + len(data) == len(whole) and data.endswith(b"line 999\n")
    # A line longer than the page: its last bytes, cut.
    path.write_bytes(b"x" * 500 + b"\n")
    assert logs.read_before(log, 501, cap=100) == (401, b"x" * 99 + b"\n", 501)
    assert logs.read_before(Beneath(tmp_fd, ("missing.log",)), 5) == (0, b"", 0)


async def test_pages_by_offset_both_ways_with_the_size(
    master: FakeMaster, spawn_worker, root: Path
) -> None:
    spawn_worker(master.port)
    await master.connected()
    reply = await master.call(
        lambda i: m.Launch(id=i, app="demo", argv=["sh", "-c", "seq 1 100000; exec sleep 30"])
    )
    info = reply.proc
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    await wait_for(lambda: log.exists() and log.read_bytes().endswith(b"100000\n"))
    whole = log.read_bytes()

    page = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0, limit=1000))
    assert page.offset == 0 and page.data == whole[:1000] and page.size == len(whole)

    back = await master.call(lambda i: m.Logs(id=i, pid=info.pid, before=len(whole), limit=1000))
    assert back.offset + len(back.data) == len(whole) and len(back.data) <= 1000
    assert back.data.endswith(b"100000\n") and whole[back.offset - 1 : back.offset] == b"\n"
    assert back.size == len(whole)

    # Walking back page by page from the end reaches line 1 with every byte once.
    got, before = b"", len(whole)
    while before > 0:
        p = await master.call(
            lambda i, at=before: m.Logs(id=i, pid=info.pid, before=at, limit=65536)
        )
        assert p.offset + len(p.data) == before and p.data
        got, before = p.data + got, p.offset
    assert got == whole

    # The worker's own cap holds whatever is asked.
    big = await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0, limit=10**9))
    assert len(big.data) == min(len(whole), logs.CHUNK)

    # Bad input: one error, nothing else.
    with pytest.raises(CallError, match="bad log limit -1"):
        await master.call(lambda i: m.Logs(id=i, pid=info.pid, offset=0, limit=-1))
    with pytest.raises(CallError, match="bad log offset -5"):
        await master.call(lambda i: m.Logs(id=i, pid=info.pid, before=-5))
    with pytest.raises(CallError, match="cannot be followed"):
        await master.call(lambda i: m.Logs(id=i, pid=info.pid, before=10, follow=True))


def test_find_forwards_and_backwards_across_blocks(
    tmp_path: Path, tmp_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "FIND_BLOCK", 64)  # matches fall across the blocks' edges
    path = tmp_path / "x.log"
    log = Beneath(tmp_fd, ("x.log",))
    lines = [
        f"line {i:04d} {'the Needle is here' if i % 100 == 50 else 'hay'}\n" for i in range(1000)
    ]
    path.write_bytes("".join(lines).encode())
    whole = path.read_bytes()
    starts = [whole.index(f"line {i:04d}".encode()) for i in (50, 150, 950)]
    assert logs.find(log, b"NEEDLE", 0) == starts[0]  # any case; the start of its line
    assert logs.find(log, b"needle", starts[0] + 1) == starts[1]
    assert logs.find(log, b"needle", starts[2] + 1) == -1
    assert logs.find(log, b"needle", len(whole), backwards=True) == starts[2]
    assert logs.find(log, b"needle", starts[1], backwards=True) == starts[0]
    assert logs.find(log, b"needle", starts[0], backwards=True) == -1
    assert logs.find(log, b"absent", 0) == -1
    assert logs.find(log, b"", 0) == -1
    assert logs.find(Beneath(tmp_fd, ("missing.log",)), b"x", 0) == -1


async def test_the_worker_searches_its_log(master: FakeMaster, spawn_worker, root: Path) -> None:
    spawn_worker(master.port)
    await master.connected()
    script = "seq 1 100000 | sed 's/^77777$/the needle/'; exec sleep 30"
    reply = await master.call(lambda i: m.Launch(id=i, app="demo", argv=["sh", "-c", script]))
    info = reply.proc
    log = root / "apps/demo/logs" / f"{info.launch}.log"
    await wait_for(lambda: log.exists() and log.read_bytes().endswith(b"100000\n"))
    whole = log.read_bytes()
    at = whole.index(b"the needle")

    hit = await master.call(lambda i: m.Logs(id=i, pid=info.pid, find="NEEDLE", limit=100))
    assert hit.found == at == hit.offset and hit.data == whole[at : at + 100]
    back = await master.call(
        lambda i: m.Logs(id=i, pid=info.pid, find="needle", before=len(whole), limit=100)
    )
    assert back.found == at and back.size == len(whole)
    none = await master.call(lambda i: m.Logs(id=i, pid=info.pid, find="needle", offset=at + 1))
    assert none.found == -1 and none.data == b""
    with pytest.raises(CallError, match="cannot be followed"):
        await master.call(lambda i: m.Logs(id=i, pid=info.pid, find="x", follow=True))


def test_find_skips_the_rest_of_a_line_full_of_matches(
    tmp_path: Path, tmp_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matches in the line ``at`` falls in cost one line-start read for the line, not one each."""
    long = b"ab" * 50_000 + b"\n"  # 50,000 matches of "ab", all in the line before ``at``
    (tmp_path / "x.log").write_bytes(long + b"first line after: ab\n")
    log = Beneath(tmp_fd, ("x.log",))
    calls = []
    real = logs._line_start
    monkeypatch.setattr(logs, "_line_start", lambda fd, pos: calls.append(pos) or real(fd, pos))
    assert logs.find(log, b"ab", 1) == len(long)
    assert len(calls) == 2  # one for the long line, one for the line it lands on
