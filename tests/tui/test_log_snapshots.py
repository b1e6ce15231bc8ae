"""Snapshots of the log pane at 120x40: search highlights, wrap, merged logs.

Over the deterministic cluster of `tests.tui.cluster` (no network, fixed
clock), with a log that never needs a worker.  Review every change to
``__snapshots__/test_log_snapshots/`` before accepting it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from corral.master.control import LogPiece
from corral.tui.app import CorralApp
from tests.tui.cluster import build_master, clock

SIZE = (120, 40)
LONG = "payload " + " ".join(f"k{i:02d}=v{i:02d}" for i in range(30))  # 218 characters


async def fake_follow(
    target: str, tail: int = 10, offset: int | None = None
) -> AsyncIterator[LogPiece]:
    """Fixed lines (one long), a last line without its newline yet; then it waits.

    A line a piece, each after a turn of the loop: two logs followed at once
    interleave line by line, as two live programs would.
    """
    lines = [f"{target} step {i:03d}: residual 1.{i:03d}e-03\n" for i in range(1, 29)]
    lines.insert(20, LONG + "\n")
    offset = 0
    for text in [*lines, f"{target} step 029: running"]:
        data = text.encode()
        yield LogPiece(offset=offset, data=data, eof=False, size=offset + len(data))
        offset += len(data)
        await asyncio.sleep(0)
    await asyncio.Event().wait()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CorralApp]:
    master = build_master(tmp_path, monkeypatch)
    monkeypatch.setattr(master, "follow", fake_follow)
    yield CorralApp(master, start_master=False, clock=clock)
    master.events.close()


async def settle(pilot: Pilot[None], *keys: str, log: bool = True) -> None:
    """Select bravo:5151, focus the log pane, press ``keys``; let the ticks land."""
    app = pilot.app
    assert isinstance(app, CorralApp)
    app.dashboard.address = "127.0.0.1:7070"
    await pilot.press("down", "down", "down", "down")  # bravo:5151, the simulation
    await pilot.pause(0.3)
    if log:
        app.dashboard.log_pane.focus()
    await pilot.press(*keys)
    await pilot.pause(0.6)
    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def test_search_highlights_matches_and_the_current_one(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, "slash", *"step 02", "enter", "n")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_wrap_shows_the_long_line_whole(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, "w")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_merged_logs_of_two_marked_processes(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        # from bravo:5151 up to alpha:4242; mark it and alpha:4243; their logs merged
        await settle(pilot, "up", "up", "up", "space", "space", "M", log=False)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
