"""Pilot tests on the fixed cluster: coalescing, filter, sort, log, help, palette, completion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from textual.binding import Binding
from textual.keys import format_key

from corral.master.control import LogPiece, Master
from corral.tui.app import CorralApp
from corral.tui.widgets.command_line import CommandLine
from corral.tui.widgets.dashboard import Dashboard
from corral.tui.widgets.help import HelpScreen, key_rows
from corral.tui.widgets.procs import ProcsTable
from tests.tui.cluster import NODES, build_master, clock
from tests.tui.conftest import until

SIZE = (120, 40)


async def chatty_follow(
    target: str, tail: int = 10, offset: int | None = None
) -> AsyncIterator[LogPiece]:
    data = "".join(f"line {i}\n" for i in range(500)).encode()
    yield LogPiece(offset=0, data=data[:1001])  # a piece that ends mid-line
    yield LogPiece(offset=1001, data=data[1001:])
    await asyncio.Event().wait()


@pytest.fixture
def master(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Master:
    m = build_master(tmp_path, monkeypatch)
    monkeypatch.setattr(m, "follow", chatty_follow)
    yield m
    m.events.close()


async def test_a_burst_of_changes_repaints_once_and_only_changed_rows(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        procs = app.dashboard.procs
        calls: list[list[str]] = []
        real = procs.refresh_keys

        def spy(keys, removed=(), fresh=None):  # type: ignore[no-untyped-def]
            keys = list(keys)
            calls.append(sorted(keys))
            real(keys, removed, fresh)

        procs.refresh_keys = spy  # type: ignore[method-assign]
        info = NODES["alpha"][1][0]
        for rss in range(100):  # 100 changes of one process in one burst
            master.cluster.update_proc("alpha", msgspec.structs.replace(info, rss=rss * 1024))
        await until(pilot, lambda: calls)
        await pilot.pause(0.3)
        assert calls == [["alpha:4242"]]
        assert str(procs.get_cell("alpha:4242", "rss")).strip() == "99K"


async def test_filter_then_clear(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        procs = app.dashboard.procs
        await pilot.press("slash", *"app:sleep", "enter")
        assert sorted(str(k.value) for k in procs.rows) == ["alpha:4242", "charlie:6001"]
        assert procs.has_focus
        await pilot.press("slash", "escape")
        assert len(procs.rows) == 7


async def test_nodes_enter_filters_by_node(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        app.dashboard.query_one("#nodes").focus()
        await pilot.press("down", "enter")
        procs = app.dashboard.procs
        assert {str(k.value).split(":")[0] for k in procs.rows} == {"bravo"}


async def test_sort_key_and_header_click_keep_the_selection(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        procs = app.dashboard.procs
        procs.select("bravo:5151")
        await pilot.press("o")  # by app
        order = [str(procs.get_row_at(i)[0]).strip() for i in range(procs.row_count)]
        assert procs.sort_column == "app"
        assert order[0] == "alpha:4100"  # app "build" sorts first
        assert procs.selected == "bravo:5151"
        await pilot.click(ProcsTable, offset=(79, 0))  # the CPU header
        assert procs.sort_column == "cpu"
        await pilot.click(ProcsTable, offset=(79, 0))
        assert procs.sort_reverse
        assert str(procs.get_row_at(0)[0]).strip() == "bravo:5151"  # the most CPU first


async def test_log_pane_batches_pauses_on_scroll_and_resumes_with_end(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        log = app.dashboard.log_pane
        await until(pilot, lambda: log.line_count == 500)
        assert log.lines[99:101] == ["line 99", "line 100"]  # the split line was joined
        assert log.border_subtitle == "following"
        log.focus()
        await pilot.press("pageup")
        await until(pilot, lambda: log.border_subtitle == "paused · End to follow")
        await pilot.press("end")
        assert log.border_subtitle == "following"


async def test_help_lists_every_key(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {(where, keys) for where, keys, _ in key_rows(app.screen.sections)}
        for binding in Dashboard.BINDINGS:
            assert isinstance(binding, Binding)
            keys = " / ".join(format_key(k) for k in binding.key.split(","))
            assert ("anywhere", keys) in listed
        assert ("processes", "space") in listed and ("log", "end") in listed
        await pilot.press("escape")
        assert app.screen is app.dashboard


async def test_palette_offers_every_action(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE):
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {
            "Launch",
            "Stop",
            "Kill",
            "Escalate",
            "Filter",
            "Cmd",
            "Help",
            "Mark",
            "Follow",
        } <= titles


async def test_command_line_tab_completes_process_names(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"kill", "space", *"cha", "tab")
        line = app.dashboard.query_one(CommandLine)
        assert line.value == "kill charlie:6001 "
        await pilot.press("escape")
        assert not app.dashboard.query_one("#command-bar").display
