"""Pilot tests on the fixed cluster: coalescing, filter, sort, log, help, palette, completion."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.errors import NoWidget
from textual.geometry import Region
from textual.keys import format_key
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Input, Static
from textual.widgets._footer import FooterKey
from textual.widgets._toast import Toast

from corral.master.control import LogPiece, Master, RemoveResult
from corral.tui.app import CorralApp
from corral.tui.widgets.command_line import CommandLine
from corral.tui.widgets.dashboard import Dashboard
from corral.tui.widgets.deploy import DeployDialog
from corral.tui.widgets.footer import KeyFooter
from corral.tui.widgets.help import HelpScreen, key_rows
from corral.tui.widgets.launch import LaunchDialog
from corral.tui.widgets.nodes import NodesTable
from corral.tui.widgets.procs import ProcsTable
from corral.tui.widgets.remove import RemoveDialog
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


async def test_a_node_filter_shows_in_the_title_and_esc_clears_it(master: Master) -> None:
    """Choosing a node's processes sets a node: filter the pane's title names; esc in the
    table (not only in the filter line) brings every process back."""
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        nodes = app.dashboard.query_one(NodesTable)
        nodes.focus()
        await pilot.press("down")
        nodes.action_filter_node()  # what the node-filter key does
        await pilot.pause()
        procs = app.dashboard.procs
        assert {str(k.value).split(":")[0] for k in procs.rows} == {"bravo"}
        pane = app.dashboard.query_one("#procs-pane")
        assert "node:bravo" in str(pane.border_title)
        assert procs.has_focus
        await pilot.press("escape")
        assert len(procs.rows) == 7
        assert "node:" not in str(pane.border_title)
        await pilot.press("slash", *"app:sleep", "enter", "space", "escape")  # a mark first
        assert procs.marked == set() and len(procs.rows) == 2  # esc unmarked, filter stays
        assert "app:sleep" in str(pane.border_title)
        await pilot.press("escape")
        assert len(procs.rows) == 7 and str(pane.border_title) == "Processes"


async def test_state_words_show_what_the_header_counts(master: Master) -> None:
    """The header's "N running" is what state:running shows (sleeping rows too), and so
    for ended and failed (a lost process needs looking at: failed)."""
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        procs, counts = app.dashboard.procs, app.dashboard.tally.counts
        assert (counts["running"], counts["ended"], counts["failed"]) == (3, 1, 3)
        for word in ("running", "ended", "failed"):
            await pilot.press("slash", *f"state:{word}", "enter")
            assert len(procs.rows) == counts[word], word
            await pilot.press("escape")
        await pilot.press("slash", *"state:sleeping", "enter")
        assert [str(k) for k in procs.rows] == ["alpha:4243"]


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
        cpu = header_x(procs, "cpu")
        await pilot.click(ProcsTable, offset=(cpu, 0))  # the CPU header
        assert procs.sort_column == "cpu"
        await pilot.click(ProcsTable, offset=(cpu, 0))
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


def header_x(table: ProcsTable, column: str) -> int:
    """The x of the middle of ``column``'s header cell, as the table lays it out now."""
    x = 0
    for c in table.columns:
        if c.hidden:
            continue
        if c.key == column:
            return x + 1 + c.width // 2
        x += c.width + 2
    raise AssertionError(f"column {column} not shown")


async def test_palette_offers_every_action(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE):
        commands = list(app.get_system_commands(app.screen))
        titles = {c.title for c in commands}
        helps = {c.help for c in commands}
        assert [c.title for c in commands].count("Quit") == 1
        assert {"anywhere: :", "anywhere: ?", "anywhere: k", "anywhere: /"} <= helps
        assert not any(w in h for h in helps for w in ("colon", "question_mark", "slash", ","))
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


# --- layout at 80x24 and 200x60, and polish (issue 11, items 3, 4 and 9) -----------------
def screen_text(app: CorralApp) -> str:
    """The top screen as the terminal gets it, one line per row."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def on_screen(app: CorralApp, widget: Widget) -> bool:
    """``widget`` is drawn, whole, where the operator can see it (not scrolled away)."""
    region = widget.region
    if not region or not app.screen.region.contains_region(region):
        return False
    try:
        found, _ = app.screen.get_widget_at(*region.center)
    except NoWidget:
        return False
    return found is widget or widget in found.ancestors


async def focus_by_tab(pilot: Pilot[None], widget: Widget, most: int = 20) -> None:
    """Press Tab until ``widget`` has the focus, as the operator would."""
    for _ in range(most):
        if widget.has_focus:
            return
        await pilot.press("tab")
    raise AssertionError(f"Tab never reached {widget}")


async def test_at_80x24_the_footer_shows_whole_keys_only(master: Master) -> None:
    """No "^d Rm a": the keys that do not fit give way, most useful first."""
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        footer = app.dashboard.query_one(KeyFooter)
        keys = list(footer.query(FooterKey))
        palette = [k for k in keys if k.has_class("-command-palette")]
        assert palette and len(keys) > 4
        for key in keys:
            assert on_screen(app, key), key.description
            assert key is palette[0] or key.region.right <= palette[0].region.x, key.description
        shown = {k.action for k in keys}
        assert {"launch", "stop", "kill", "filter", "command", "help", "app.quit"} <= shown
        assert "remove" in footer.dropped  # "Rm app" gave way, whole
    async with CorralApp(master, start_master=False, clock=clock).run_test(size=(200, 60)) as p:
        await p.pause()
        footer = p.app.screen.query_one(KeyFooter)
        assert footer.dropped == []  # all of them, at 200 columns


async def test_at_80x24_the_launch_dialogs_buttons_are_reachable(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("l")
        assert isinstance(app.screen, LaunchDialog)
        for button in app.screen.query(Button):
            await focus_by_tab(pilot, button)
            await pilot.pause()
            assert on_screen(app, button), button.label


async def test_at_80x24_the_deploy_dialogs_lower_half_is_reachable(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        dialog = app.screen
        assert isinstance(dialog, DeployDialog)
        for wanted in ("#deploy-dry", "#deploy-trust", "#deploy-force", "#deploy", "#close"):
            widget = dialog.query_one(wanted)
            await focus_by_tab(pilot, widget)
            await pilot.pause()
            assert on_screen(app, widget), wanted


async def test_at_80x24_the_help_fits_the_width_and_scrolls_to_its_end(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause()
        box = app.screen.query_one("#help", VerticalScroll)
        assert app.screen.region.contains_region(box.region)  # not cut on the right
        assert box.max_scroll_y > 0
        await pilot.press("end")
        await pilot.pause()
        assert box.scroll_y == box.max_scroll_y
        assert "Tab completes" in screen_text(app)  # the last line of the help


async def test_at_200x60_the_panes_grow(master: Master) -> None:
    sizes = {}
    for size in ((120, 40), (200, 60)):
        app = CorralApp(master, start_master=False, clock=clock)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            dash = app.dashboard
            sizes[size] = [
                dash.query_one(f"#{pane}").region.height for pane in ("procs-pane", "log")
            ]
            width = dash.procs.scrollable_content_region.width
            assert dash.procs._table_width() == width  # every column used, none blank
    assert all(big > small for big, small in zip(sizes[200, 60], sizes[120, 40], strict=True))


async def test_at_160_columns_the_command_shows_whole_and_no_width_is_wasted(
    master: Master,
) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        procs = app.dashboard.procs
        width = {c.key: c.width for c in procs.columns if not c.hidden}
        longest = max(len(v.command) for v in procs.views.values())
        assert width["command"] >= longest
        assert width["reason"] == len("SIGSEGV, core dumped")  # as wide as it says
        assert "cpu%" in width and "max_rss" in width and "start" in width
        assert procs._table_width() == procs.scrollable_content_region.width
        assert "python3 -m http.server 8000" in screen_text(app)


async def test_at_80_columns_cut_text_ends_in_an_ellipsis(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        procs = app.dashboard.procs
        assert procs._table_width() <= procs.scrollable_content_region.width  # no sideways
        text = screen_text(app)
        assert "python3 -m" in text and "python3 -m http.server 8000" not in text
        assert any("python3 -m" in line and "…" in line for line in text.splitlines())


async def test_set_columns_shows_exactly_those_in_order(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        procs = app.dashboard.procs
        assert {"node", "pid", "app", "state", "cpu", "cpu%", "rss", "command"} <= set(
            ProcsTable.COLUMN_NAMES
        )
        procs.set_columns(["pid", "node", "cpu%", "command"])
        await pilot.pause()
        assert [c.key for c in procs.columns] == ["pid", "node", "cpu%", "command"]
        header = screen_text(app).splitlines()[procs.region.y]
        assert header.index("PID") < header.index("Node") < header.index("CPU%")
        assert str(procs.get_cell("alpha:4242", "cpu%")).strip() == "0.0"
        assert str(procs.get_cell("alpha:4100", "cpu%")).strip() == "-"  # ended
        with pytest.raises(ValueError, match="unknown column: bogus"):
            procs.set_columns(["pid", "bogus"])
        assert [c.key for c in procs.columns] == ["pid", "node", "cpu%", "command"]


async def test_dialogs_show_their_own_keys_not_the_main_screens(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        for key, dialog in (("l", LaunchDialog), ("d", DeployDialog), ("question_mark", None)):
            await pilot.press(key)
            await pilot.pause()
            screen = app.screen
            assert screen is not app.dashboard and (dialog is None or isinstance(screen, dialog))
            actions = {k.action for k in screen.query_one(Footer).query(FooterKey)}
            assert actions and not actions & {"toggle_mark", "app.quit", "stop", "remove"}
            text = screen_text(app).splitlines()[-1]
            assert "Mark" not in text and "Quit" not in text
            await pilot.press("escape")


async def test_toasts_leave_the_log_status_line_and_footer_visible(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        for i in range(3):
            app.notify(f"message {i}: " + "many words " * 8)
        await pilot.pause(0.3)
        toasts = list(app.screen.query(Toast))
        assert toasts
        log = app.dashboard.log_pane.region
        status = Region(log.x, log.bottom - 1, log.width, 1)  # "following" is on it
        for toast in toasts:
            assert not toast.region.overlaps(status)
            assert not toast.region.overlaps(app.dashboard.query_one(KeyFooter).region)


async def test_dialogs_remember_the_last_command_and_file(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l", *"sleep", "space", *"60", "enter")  # launched or not: kept
        await until(pilot, lambda: "Launch" not in str(app.screen.query_one("#launch-error")))
        await pilot.press("escape", "l")
        assert app.screen.query_one("#launch-command", Input).value == "sleep 60"
        await pilot.press("escape", "d", *"/no/such/prog", "ctrl+s")
        await pilot.press("escape", "d")
        assert app.screen.query_one("#deploy-file", Input).value == "/no/such/prog"


async def test_colon_q_quits_and_colon_help_opens_the_help(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        for line in ("help", "h"):
            await pilot.press("colon", *line, "enter")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.press("escape")
            assert app.screen is app.dashboard
        await pilot.press("colon", "q", "enter")
        await until(pilot, lambda: app._exit)
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"quit", "enter")
        await until(pilot, lambda: app._exit)


async def test_checkboxes_read_ticked_or_not_without_colour(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await pilot.pause()
        dry = app.screen.query_one("#deploy-dry", Checkbox)
        line = next(ln for ln in screen_text(app).splitlines() if "Dry run" in ln)
        assert "[ ] Dry run" in line
        dry.value = True
        await pilot.pause()
        line = next(ln for ln in screen_text(app).splitlines() if "Dry run" in ln)
        assert "[x] Dry run" in line
        nodes = [ln for ln in screen_text(app).splitlines() if "127.0.0.1:4100" in ln]
        assert any("[x]" in ln for ln in nodes) and any("[ ]" in ln for ln in nodes)


async def test_rm_dialog_names_the_stopped_processes_as_node_pid(master: Master) -> None:
    async def remover(app_name: str, **kw: object) -> list[RemoveResult]:
        return [RemoveResult(node="alpha", removed=["apps/sleep/bin"], stopped=[4242])]

    dialog = RemoveDialog("sleep", ["alpha"], lambda app_name: {}, remover)
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(dialog)
        await pilot.pause()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: dialog.results is not None)
        assert "stopped alpha:4242" in str(dialog.query_one("#remove-result", Static).content)


async def test_screenshots_place_every_cell_at_its_column(master: Master) -> None:
    """In an SVG screenshot the selected node's row is cut into the same runs as the
    others: its sparkline starts where theirs do, and no run starts or ends in blanks
    (which renderers squeeze: the cause of node1's misaligned sparkline)."""
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        svg = app.export_screenshot()
    runs = re.findall(
        r'<text [^>]*x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)"[^>]*>([^<]*)</text>', svg
    )
    ends, table_rows = set(), set()
    for x, y, length, text in runs:
        if any(c in text for c in "▁▂▃▄▅▆▇█"):
            assert text.strip("▁▂▃▄▅▆▇█&#160;") == "", text  # a run of its own
            ends.add(round(float(x) + float(length), 1))
            table_rows.add(y)
    assert len(table_rows) == 3  # alpha (selected), bravo, charlie
    assert len(ends) == 1  # right-aligned in one column, the selected row too
    for _x, y, _length, text in runs:
        if y in table_rows:
            assert not text.startswith("&#160;") and not text.endswith("&#160;"), text
