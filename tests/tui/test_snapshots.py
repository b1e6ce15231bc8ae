"""Snapshots of the dashboard at 120x40 over a deterministic cluster (no network, fixed clock).

Review every change to ``__snapshots__/`` before accepting it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from corral.master.control import LogPiece
from corral.master.deployer import DeployResult
from corral.tui.app import CorralApp
from tests.tui.cluster import MiB, build_master, clock

SIZE = (120, 40)


async def fake_follow(
    target: str, tail: int = 10, offset: int | None = None
) -> AsyncIterator[LogPiece]:
    """A log that never needs a worker: fixed lines, then it waits as a live follow does."""
    lines = [f"{target} step {i:03d}: residual 1.{i:03d}e-03" for i in range(1, 31)]
    data = ("\n".join(lines) + "\n").encode()
    yield LogPiece(offset=0, data=data, eof=False)
    await asyncio.Event().wait()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CorralApp]:
    master = build_master(tmp_path, monkeypatch)
    monkeypatch.setattr(master, "follow", fake_follow)
    yield CorralApp(master, start_master=False, clock=clock)
    master.events.close()


async def settle(pilot: Pilot[None], *keys: str) -> None:
    """Press ``keys``, then let refreshes and log ticks land; no blinking cursors."""
    app = pilot.app
    assert isinstance(app, CorralApp)
    app.dashboard.address = "127.0.0.1:7070"
    await pilot.press(*keys)
    await pilot.pause(0.3)
    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def test_main_screen_three_nodes_one_lost(app: CorralApp, snap_compare) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_launch_dialog(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, "l", *"sleep", "space", *"60")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, "question_mark")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_log_pane_following_a_process(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, "down", "down", "down", "down")  # bravo:5151, the simulation

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_kill_confirmation_of_two_marked_processes(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        # mark alpha:4242 and alpha:4243, then ask to kill them
        await settle(pilot, "down", "space", "space", "k")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_deploy_dialog_with_progress_bars_mid_way(
    app: CorralApp, snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alpha and bravo (all alive; charlie is lost) part way through a 8 MiB deploy."""
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "hello").write_bytes(b"\x7fELF")
    monkeypatch.chdir(tmp_path)

    async def fake_deploy(file: object, **kw: Any) -> DeployResult:
        progress = kw["progress"]
        progress("alpha", 3 * MiB, 8 * MiB)
        progress("bravo", 13 * MiB // 2, 8 * MiB)
        await asyncio.Event().wait()  # mid-way, for ever
        raise AssertionError("unreachable")

    monkeypatch.setattr(app.deployer, "deploy", fake_deploy)

    async def run_before(pilot: Pilot[None]) -> None:
        # file, then Tab past the app and the node list to "All alive nodes"
        await settle(pilot, "d", *"build/hello", "tab", "tab", "tab", "space", "ctrl+s")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_rm_confirmation_names_the_app_and_nodes(app: CorralApp, snap_compare) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        # alpha:4242's app "sleep": running on alpha, and on charlie, which is lost
        await settle(pilot, "down", "ctrl+d")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# --- every screen at the smallest terminal and a big one ----------------------------------
SIZES = [(80, 24), (160, 48)]
SCREENS = {
    "main": (),
    "launch": ("l", *"sleep", "space", *"60"),
    "deploy": ("d", *"build/hello"),
    "rm": ("down", "ctrl+d"),
    "confirm": ("down", "space", "space", "k"),
    "help": ("question_mark",),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_every_screen_at_80x24_and_160x48(
    app: CorralApp, snap_compare, screen: str, size: tuple[int, int]
) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, *SCREENS[screen])

    assert snap_compare(app, terminal_size=size, run_before=run_before)
