"""Process logs: tails read backwards, reads from an offset, follow streams.

Every chunk names the byte offset it starts at, so a reader that lost its
connection asks again from its last offset and neither misses nor repeats
a byte.  No read loads more than `CHUNK` bytes.

A log is named by a `daemon.beneath.Beneath` (see `AppStore.log_path`),
walked from ROOT at every open: a log, or a directory on its way, swapped
for a symlink is refused with a `StoreError` naming it, never read
through.  A stream that is following keeps the fd it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from corral.daemon.beneath import Beneath, StoreError
from corral.daemon.watch import POLL, Growth
from corral.transport.messages import LogChunk, Message

CHUNK = 256 * 1024
BLOCK = 64 * 1024

Send = Callable[[Message], Awaitable[None]]


def _open(path: Beneath) -> int | None:
    """The log open for reading; None if it is missing or unreadable, StoreError if refused."""
    try:
        return path.open_regular()
    except OSError:
        return None


def tail(path: Beneath, lines: int, cap: int = CHUNK) -> tuple[int, bytes]:
    """(offset, bytes) of the last ``lines`` lines, at most ``cap`` bytes."""
    fd = _open(path)
    if fd is None:
        return 0, b""
    try:
        size = os.fstat(fd).st_size
        start = _tail_start(fd, size, lines, max(0, size - cap))
        return start, os.pread(fd, size - start, start)
    finally:
        os.close(fd)


def _tail_start(fd: int, size: int, lines: int, lowest: int) -> int:
    """Where the last ``lines`` lines begin, scanning back block by block."""
    if size == 0 or lines <= 0:
        return size
    # A final newline ends the last line rather than starting a new one.
    need = lines + (os.pread(fd, 1, size - 1) == b"\n")
    pos = size
    while pos > lowest:
        n = min(BLOCK, pos - lowest)
        pos -= n
        block = os.pread(fd, n, pos)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            need -= 1
            if need == 0:
                return pos + i + 1
    return lowest


def read_at(path: Beneath, offset: int, cap: int = CHUNK) -> tuple[bytes, int]:
    """(up to ``cap`` bytes from ``offset``, the file's size now)."""
    fd = _open(path)
    if fd is None:
        return b"", 0
    try:
        return os.pread(fd, cap, offset), os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_before(path: Beneath, before: int, cap: int = CHUNK) -> tuple[int, bytes, int]:
    """(offset, bytes, size now) of the page of at most ``cap`` bytes ending at ``before``.

    The page starts where a line starts: after the first newline in it,
    unless the page begins the file or holds no newline but its last byte
    (one line longer than ``cap``: its last ``cap`` bytes, cut).
    """
    fd = _open(path)
    if fd is None:
        return 0, b"", 0
    try:
        size = os.fstat(fd).st_size
        end = max(0, min(before, size))
        start = max(0, end - cap)
        data = os.pread(fd, end - start, start)
        if start > 0:
            cut = data.find(b"\n", 0, len(data) - 1)
            if cut >= 0:
                start, data = start + cut + 1, data[cut + 1 :]
        return start, data, size
    finally:
        os.close(fd)


FIND_BLOCK = 1 << 20


def find(path: Beneath, needle: bytes, at: int, backwards: bool = False) -> int:
    """Where the line holding ``needle`` (ASCII letters in any case) starts; -1 if none.

    Forwards: the first match in a line that starts at or after ``at``;
    backwards: the last match that ends at or before ``at``.  Reads
    `FIND_BLOCK` bytes at a time.
    """
    needle = needle.lower()
    n = len(needle)
    fd = _open(path)
    if fd is None or n == 0:
        if fd is not None:
            os.close(fd)
        return -1
    try:
        size = os.fstat(fd).st_size
        if backwards:
            end = min(max(0, at), size)
            while end >= n:
                start = max(0, end - FIND_BLOCK)
                i = os.pread(fd, end - start, start).lower().rfind(needle)
                if i >= 0:
                    return _line_start(fd, start + i)
                if start == 0:
                    break
                end = start + n - 1  # a match across the blocks' edge is in the next
            return -1
        pos = max(0, at)
        while pos < size:
            block = os.pread(fd, FIND_BLOCK, pos).lower()
            i = block.find(needle)
            while i >= 0:
                start = _line_start(fd, pos + i)
                if start >= at:
                    return start
                # In the line ``at`` falls in, as is every later match before its newline:
                # go on after that newline (one line-start read per line, not per match).
                eol = block.find(b"\n", i + n)
                i = -1 if eol < 0 else block.find(needle, eol + 1)
            if len(block) < FIND_BLOCK:
                break
            pos += len(block) - n + 1
        return -1
    finally:
        os.close(fd)


def _line_start(fd: int, pos: int) -> int:
    """The offset of the start of the line that holds byte ``pos``."""
    while pos > 0:
        low = max(0, pos - BLOCK)
        i = os.pread(fd, pos - low, low).rfind(b"\n")
        if i >= 0:
            return low + i + 1
        pos = low
    return 0


def log_size(path: Beneath) -> int:
    fd = _open(path)
    if fd is None:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class LogStreams:
    """The follow streams of one master connection, keyed by request id."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def open(self, sid: int, path: Beneath, offset: int, ended: asyncio.Event) -> None:
        """Send what is appended to ``path`` from ``offset`` until the end."""
        self.close(sid)
        task = asyncio.create_task(self._follow(sid, path, offset, ended))
        self._tasks[sid] = task
        task.add_done_callback(lambda t: self._done(sid, t))

    def _done(self, sid: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(sid) is task:
            del self._tasks[sid]

    def close(self, sid: int) -> bool:
        """Stop stream ``sid``; False if there was none."""
        task = self._tasks.pop(sid, None)
        if task is None:
            return False
        task.cancel()
        return True

    async def close_all(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)

    async def _follow(self, sid: int, path: Beneath, offset: int, ended: asyncio.Event) -> None:
        fd: int | None = None
        growth: Growth | None = None
        try:
            while True:
                if fd is None:
                    with contextlib.suppress(StoreError):  # refused: as good as missing
                        fd = _open(path)
                    if fd is not None:
                        # Watched through the fd: exactly the file we read.
                        growth = Growth(Path(f"/proc/self/fd/{fd}"))
                # Looked at before reading: whatever the program wrote before
                # it ended is then in the file when we read.
                done = ended.is_set()
                data = os.pread(fd, CHUNK, offset) if fd is not None else b""
                last = done and len(data) < CHUNK
                if data or last:
                    # send() awaits the socket's drain: a slow master slows us.
                    await self._send(LogChunk(id=sid, offset=offset, data=data, eof=last))
                    offset += len(data)
                if last:
                    return
                if len(data) < CHUNK:
                    await (growth.wait() if growth is not None else asyncio.sleep(POLL))
        finally:
            if growth is not None:
                growth.close()
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
