"""Followed logs wake on the kernel's word that the file was written."""

from __future__ import annotations

from pathlib import Path

from corral.daemon.watch import Growth
from tests.daemon.harness import wait_for


async def test_a_write_wakes_the_follower(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    growth = Growth(log)
    try:
        assert growth.watching  # inotify on Linux
        assert not growth._event.is_set()
        with open(log, "ab") as f:
            f.write(b"a line\n")
        # Set only by the inotify reader (a timed-out wait never sets it).
        await wait_for(growth._event.is_set, what="the inotify wake-up")
        await growth.wait()  # returns at once, and is ready for the next write
        assert not growth._event.is_set()
    finally:
        growth.close()


async def test_without_a_file_it_polls(tmp_path: Path) -> None:
    growth = Growth(tmp_path / "not-yet")
    try:
        assert not growth.watching
        await growth.wait()  # a plain timed wait
    finally:
        growth.close()
