"""The log pane over real workers: following, paging a big log, search, wrap, save, merged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from corral.master.control import LogPiece
from corral.tui.app import CorralApp
from corral.tui.widgets.command_line import CommandLine
from corral.tui.widgets.log_pane import CURRENT, MAX_LINES, LogPane
from corral.tui.widgets.log_prompt import LogPrompt
from tests.tui.conftest import Workers, dashboard, until

NODES = ("n1", "n2")
TICKER = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"


@pytest.fixture
async def running(tmp_path: Path, workers: Workers) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard over a real master with two real workers."""
    async with dashboard(workers, tmp_path / "state", NODES) as running:
        yield running


async def start(app: CorralApp, pilot: Pilot[None], script: str, node: str = "n1") -> str:
    """Launch ``sh -c script`` on ``node`` and select it: its key."""
    result = await app.master.launch(["sh", "-c", script], nodes=[node], app="logs")
    key = result.procs[0].key
    procs = app.dashboard.procs

    def shown() -> bool:
        """the new process's row"""
        return key in procs.rows

    await until(pilot, shown)
    procs.focus()
    assert procs.select(key)
    await until(pilot, lambda: app.dashboard.log_pane.key == key)
    return key


def log_file(workers: Workers, node: str) -> Path:
    """The one log file of app "logs" on ``node``'s worker."""
    (path,) = (workers.base / node / "apps" / "logs" / "logs").glob("*.log")
    return path


def at_bottom(pane: LogPane) -> bool:
    """the pane shows the last line it holds"""
    return pane.visible_lines()[-1:] == pane.lines[-1:] and pane.is_vertical_scroll_end


async def test_following_goes_on_while_the_command_line_is_open_and_after(running) -> None:
    app, pilot = running
    await start(app, pilot, TICKER)
    pane = app.dashboard.log_pane
    await until(pilot, lambda: len(pane.lines) >= 60)  # more than the pane's height
    await pilot.press("colon")
    assert app.dashboard.query_one("#command-bar").display
    line = app.dashboard.query_one(CommandLine)
    await pilot.press("F", "home", "end")  # typed into the line: F and End stay its own
    assert line.value == "F" and line.has_focus and line.cursor_position == 1
    seen = len(pane.lines)
    await until(pilot, lambda: len(pane.lines) > seen + 5)
    assert pane.following and pane.border_subtitle == "following"
    await until(pilot, lambda: at_bottom(pane))
    await pilot.press("escape")
    assert not app.dashboard.query_one("#command-bar").display
    seen = len(pane.lines)
    await until(pilot, lambda: len(pane.lines) > seen + 5)
    await until(pilot, lambda: at_bottom(pane))
    assert pane.following


async def test_end_and_F_follow_from_the_processes_table(running) -> None:
    app, pilot = running
    await start(app, pilot, TICKER)
    pane = app.dashboard.log_pane
    procs = app.dashboard.procs
    await until(pilot, lambda: len(pane.lines) >= 60)
    for key in ("end", "F"):
        pane.focus()
        # The lines are in, but the pane scrolls only once its new height is laid out:
        # a page up before that scroll (from the top) would move nothing.
        await until(pilot, lambda: pane.has_focus and pane.max_scroll_y > 0 and at_bottom(pane))
        await pilot.press("pageup")
        await until(pilot, lambda: not pane.following)
        assert pane.border_subtitle.startswith("paused")
        procs.focus()
        await pilot.press(key)
        assert procs.has_focus
        assert pane.following
        await until(pilot, lambda: at_bottom(pane))


async def test_home_reaches_line_one_of_a_big_log_and_end_comes_back(running) -> None:
    app, pilot = running
    await start(app, pilot, "seq 1 300000; exec sleep 60")
    pane = app.dashboard.log_pane
    await until(pilot, lambda: pane.lines[-1:] == ["300000"], timeout=20)
    assert "1" not in pane.lines[:1]  # it opened at the end, not at line 1
    pane.focus()
    await until(pilot, lambda: pane.has_focus and pane.max_scroll_y > 0)  # laid out
    await pilot.press("home")
    await until(pilot, lambda: pane.visible_lines()[:1] == ["1"])
    assert pane.window[0] == 0 and not pane.following
    assert pane.line_count <= MAX_LINES  # a window of pages, not the whole log
    # Scrolling down past the window fetches the pages after it, and the lines run on.
    for _ in range(3):
        await pilot.press("pagedown")
    first = int(pane.visible_lines()[0])
    assert first > 1
    end_before = pane.window[1]
    pane.scroll_to(y=pane.max_scroll_y, animate=False, immediate=True)
    await until(pilot, lambda: pane.window[1] > end_before)  # the page after, fetched
    shown = [int(x) for x in pane.visible_lines()]
    assert shown == list(range(shown[0], shown[0] + len(shown)))
    assert pane.line_count <= MAX_LINES
    await pilot.press("end")
    await until(pilot, lambda: pane.visible_lines()[-1:] == ["300000"])
    assert pane.following and pane.attached
    numbers = [int(x) for x in pane.lines]
    assert numbers == list(range(numbers[0], 300001))  # none lost, none twice


async def test_paging_up_line_by_line_runs_through_the_page_before(running) -> None:
    app, pilot = running
    await start(app, pilot, "seq 1 30000; exec sleep 60")
    pane = app.dashboard.log_pane
    await until(pilot, lambda: pane.lines[-1:] == ["30000"], timeout=20)
    top_before = pane.window[0]
    pane.focus()
    await until(pilot, lambda: pane.has_focus and pane.max_scroll_y > 0 and at_bottom(pane))
    for _ in range(30):  # 30 pages up: well past the 200 lines the pane opened with
        await pilot.press("pageup")
    await until(pilot, lambda: pane.window[0] < top_before)
    shown = [int(x) for x in pane.visible_lines()]
    assert shown == list(range(shown[0], shown[0] + len(shown)))
    numbers = [int(x) for x in pane.lines]
    assert numbers == list(range(numbers[0], 30001))


@pytest.mark.parametrize("searching_worker", [True, False], ids=["worker-search", "paging"])
async def test_search_with_n_and_N_lands_on_the_matching_lines(
    running, searching_worker: bool
) -> None:
    """Matches beyond the window: the worker finds them, or (a worker that
    cannot search, as one from before Logs(find)) the pane pages to them."""
    app, pilot = running
    pane = app.dashboard.log_pane
    if not searching_worker:
        read_log = app.master.read_log

        async def no_find(target: str, find: str = "", **kwargs: Any) -> LogPiece:
            return await read_log(target, **kwargs)  # found stays None

        pane.pages = no_find
    script = (
        'awk \'BEGIN{for(i=1;i<=100000;i++) print (i%25000==0 ? "needle " i : "hay " i)}\';'
        " exec sleep 60"
    )
    await start(app, pilot, script)
    pane = app.dashboard.log_pane
    await until(pilot, lambda: pane.lines[-1:] == ["needle 100000"], timeout=20)
    pane.focus()
    await until(pilot, lambda: pane.has_focus and pane.max_scroll_y > 0)  # laid out
    await pilot.press("home")
    await until(pilot, lambda: pane.visible_lines()[:1] == ["hay 1"])
    await pilot.press("slash")
    await until(pilot, lambda: isinstance(app.screen, LogPrompt))
    await pilot.press(*"NEEDLE", "enter")  # case does not matter
    await until(pilot, lambda: pane.current_match == "needle 25000")
    assert "needle 25000" in pane.visible_lines()
    # The match is drawn highlighted.
    row = pane.visible_lines().index("needle 25000")
    styles = {s.style for s in pane.render_line(row) if s.text == "needle"}
    assert any(s is not None and s.bgcolor == CURRENT.bgcolor for s in styles)
    await pilot.press("n")
    await until(pilot, lambda: pane.current_match == "needle 50000")
    await pilot.press("n")
    await until(pilot, lambda: pane.current_match == "needle 75000")
    await pilot.press("N")
    await until(pilot, lambda: pane.current_match == "needle 50000")
    assert "needle 50000" in pane.visible_lines()
    await pilot.press("end")
    await until(pilot, lambda: pane.attached and pane.following)
    await pilot.press("N")  # from the view, backwards through the pages before
    await until(pilot, lambda: pane.current_match == "needle 75000")
    assert "needle 75000" in pane.visible_lines()


async def test_wrap_toggle_shows_a_long_line_whole(running) -> None:
    app, pilot = running
    long = "".join(f"{i:03d}" for i in range(100))  # 300 characters, in a 118-column pane
    await start(app, pilot, f"echo short; echo {long}; exec sleep 60")
    pane = app.dashboard.log_pane
    await until(pilot, lambda: pane.lines == ["short", long])
    assert pane.virtual_size.height == 2 and pane.virtual_size.width >= 300
    pane.focus()
    await until(pilot, lambda: pane.has_focus)
    await pilot.press("w")
    assert pane.wrap and "wrap" in pane.border_subtitle
    width = pane.scrollable_content_region.width
    assert pane.virtual_size.height == 1 + -(-300 // width)
    drawn = "".join(pane.render_line(y).text for y in range(1, 1 + -(-300 // width)))
    assert drawn.rstrip() == long
    await pilot.press("w")
    assert not pane.wrap and pane.virtual_size.height == 2


async def test_a_last_line_without_a_newline_is_shown(running) -> None:
    app, pilot = running
    await start(app, pilot, "printf 'first\\nsecond, no newline yet'; exec sleep 60")
    pane = app.dashboard.log_pane
    await until(pilot, lambda: pane.lines == ["first", "second, no newline yet"])
    assert pane.visible_lines()[-1] == "second, no newline yet"


async def test_save_writes_the_whole_log_as_the_worker_has_it(
    running, workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, pilot = running
    monkeypatch.chdir(tmp_path)
    key = await start(app, pilot, "seq 1 200000; printf 'tail without newline'; exec sleep 60")
    pane = app.dashboard.log_pane
    await until(pilot, lambda: pane.lines[-1:] == ["tail without newline"], timeout=20)
    pane.focus()
    await until(pilot, lambda: pane.has_focus and pane.max_scroll_y > 0)  # laid out
    await pilot.press("S")
    await until(pilot, lambda: isinstance(app.screen, LogPrompt))
    node, pid = key.split(":")
    assert app.screen.query_one("#log-prompt-input").value == f"./{node}-{pid}.log"
    await pilot.press("enter")
    saved = tmp_path / f"{node}-{pid}.log"
    await until(pilot, saved.exists, timeout=20)
    assert saved.read_bytes() == log_file(workers, "n1").read_bytes()
    # A path that cannot be written: one line saying so, nothing else changed.
    await pilot.press("S")
    await until(pilot, lambda: isinstance(app.screen, LogPrompt))
    prompt = app.screen.query_one("#log-prompt-input")
    prompt.value = str(tmp_path / "no-such-dir" / "x.log")
    await pilot.press("enter")
    await until(pilot, lambda: any("not saved" in n.message for n in app._notifications))
    assert not (tmp_path / "no-such-dir").exists()


async def test_merged_view_prefixes_each_line_with_its_process(running) -> None:
    app, pilot = running
    script = "i=0; while :; do i=$((i+1)); echo from {} $i; sleep 0.05; done"
    one = await start(app, pilot, script.format("n1"), node="n1")
    two = await start(app, pilot, script.format("n2"), node="n2")
    procs = app.dashboard.procs
    procs.focus()
    for key in (one, two):
        procs.select(key)
        await pilot.press("space")
    assert set(procs.targets()) == {one, two}
    await pilot.press("M")
    pane = app.dashboard.log_pane
    assert set(pane.merged) == {one, two}

    def both() -> bool:
        """lines from both processes in the merged pane"""
        return {pane.source_of(i) for i in range(pane.line_count)} >= {one, two}

    await until(pilot, both)
    colours = set()
    for i in range(pane.line_count):
        key = pane.source_of(i)
        node = key.split(":")[0]
        assert pane.lines[i].startswith(f"from {node} ")
        (prefix, *_) = pane._strip(i)  # drawn: the key, in the process's colour
        assert prefix.text.strip() == key
        colours.add((key, prefix.style.color if prefix.style else None))
    assert len({c for _, c in colours}) == 2
    # Each program's lines in order, none lost between the first and the last seen.
    for key in (one, two):
        seq = [
            int(pane.lines[i].split()[-1])
            for i in range(pane.line_count)
            if pane.source_of(i) == key
        ]
        assert seq == list(range(seq[0], seq[0] + len(seq)))
