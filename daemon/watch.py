"""Waiting for a file to grow: inotify where it works, a short poll otherwise.

A followed log is read as soon as the program writes to it (the kernel's
IN_MODIFY), instead of at the next tick of a timer.  The timer stays, every
`POLL` seconds: it is how a follower notices that the program ended, and
all there is where inotify is not available (no libc symbol, out of
watches).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from pathlib import Path

POLL = 0.05  # seconds between looks at a followed log that is not written to
_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def _load() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load()


class Growth:
    """Wait until ``path`` is written to (or `POLL` passes); close when done."""

    def __init__(self, path: Path) -> None:
        self._fd = -1
        self._event = asyncio.Event()
        if _libc is None:
            return
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        if _libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
            os.close(fd)
            return
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    @property
    def watching(self) -> bool:
        """True when inotify wakes us; False when we poll."""
        return self._fd >= 0

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._fd, 4096):  # drain: one wake-up for many writes
                pass
        self._event.set()

    async def wait(self) -> None:
        """Return after the next write, or after `POLL` seconds at most.

        `asyncio.timeout`, not `wait_for`: on Python 3.11 a `wait_for` whose
        event fires as the task is cancelled swallows the cancellation, and
        an unfollowed stream would go on sending.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL):
                await self._event.wait()
        self._event.clear()

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
