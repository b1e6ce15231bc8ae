"""What a `LiveTable` draws stays right: new values show, rows move, nothing stale.

`LiveTable` draws with the Line API from a strip cached per row on screen,
and asks for the cells of a row only while it is on screen.  These tests
read what is actually on the screen (the compositor's lines, as the terminal
would get them) and hold it against a plain `DataTable` given the same
operations: the plain one is the reference for what should be drawn.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from corral.master.model import NodeView, ProcView
from corral.tui.widgets import live_table
from corral.tui.widgets.live_table import ROWS_PER_FRAME, LiveTable
from corral.tui.widgets.nodes import FLUSH, NodesTable
from corral.tui.widgets.procs import ProcsTable

SIZE = (80, 12)  # a header and 11 rows: 30 rows need scrolling
COLUMNS = (("name", 6), ("a", 8), ("b", 8))
Cells = tuple[Any, ...]


class Grid(LiveTable):
    """The smallest live table: a row shows what ``views`` holds for it.

    Used the way the panes use `LiveTable`: a row is added by its key, and
    only rows on screen are brought up to date.  Columns ``a`` and ``b`` sort
    by the values held (numbers stay numbers), ``name`` does not sort.
    """

    def __init__(self, widths: tuple[int | None, ...] = (6, 8, 8)) -> None:
        super().__init__()
        self.widths = widths
        self.views: dict[str, Cells] = {}

    def on_mount(self) -> None:
        for (key, _), width in zip(COLUMNS, self.widths, strict=True):
            self.add_column(key, key=key, width=width)

    def now(self) -> float:
        return 0.0

    def row_cells(self, key: str, now: float) -> Cells:
        return tuple(v if isinstance(v, Text) else str(v) for v in self.views[key])

    def sort_key(self, column: str) -> Callable[[str], Any] | None:
        if column == "a":  # as `Plain.order` sorts
            return lambda key: (str(self.views[key][1]), key)
        if column == "b":
            return lambda key: (self.views[key][2], key)
        return None

    def put(self, key: str, *cells: Any) -> None:
        new = key not in self.views
        self.views[key] = (key, *cells)
        if new:
            self.add_live_row(key)
        else:
            self.draw_changed([key], 0.0)

    def drop(self, key: str) -> None:
        del self.views[key]
        self.drop_live_row(key)
        self.draw_visible(0.0)

    def order(self, reverse: bool = False) -> None:
        """Sort by column ``a``, the cursor staying on its row."""
        self.sort_by("a", reverse)

    def wipe(self) -> None:
        self.views.clear()
        self.clear()


class Plain(DataTable[Any]):
    """The reference: a plain DataTable, every cell written as it changes."""

    def __init__(self, widths: tuple[int | None, ...] = (6, 8, 8)) -> None:
        super().__init__(cursor_type="row")
        self.widths = widths
        self.views: dict[str, Cells] = {}

    def on_mount(self) -> None:
        for (key, _), width in zip(COLUMNS, self.widths, strict=True):
            self.add_column(key, key=key, width=width)

    def put(self, key: str, *cells: Any) -> None:
        row = (key, *cells)
        if key in self.views:
            for (column, _), value in zip(COLUMNS, row, strict=True):
                self.update_cell(key, column, value)
        else:
            self.add_row(*row, key=key)
        self.views[key] = row

    def drop(self, key: str) -> None:
        del self.views[key]
        self.remove_row(key)

    def order(self, reverse: bool = False) -> None:
        """As `Grid.order`: the cursor stays on its row, the header shows the order."""
        keep = self.coordinate_to_cell_key(self.cursor_coordinate).row_key if self.rows else None
        self.columns[ColumnKey("a")].label = Text("a" + ("▼" if reverse else "▲"))
        by = self.views
        self.sort("name", key=lambda name: (str(by[str(name)][1]), str(name)), reverse=reverse)
        if keep is not None:
            self.move_cursor(row=self.get_row_index(keep))

    def wipe(self) -> None:
        self.views.clear()
        self.clear()


class One(App[None]):
    CSS = "DataTable { scrollbar-size-vertical: 1; }"  # as a LiveTable's, as the app's

    def __init__(self, table: LiveTable | DataTable[Any]) -> None:
        super().__init__()
        self.table = table
        self.messages: list[tuple[str, str, int]] = []  # what the table told the app

    def compose(self) -> ComposeResult:
        yield self.table

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self.messages.append(("highlighted", event.row_key, event.cursor_row))

    def on_live_table_row_selected(self, event: LiveTable.RowSelected) -> None:
        self.messages.append(("selected", event.row_key, event.cursor_row))


def styled(app: App[Any]) -> list[list[tuple[str, Style | None]]]:
    """The screen as the terminal gets it: each line's characters with their styles.

    One entry per character, so how the text is split into segments does not
    count; nor does the metadata DataTable hides in its styles for the mouse.
    """
    strips = app.screen._compositor.render_strips()
    return [
        [
            (char, None if seg.style is None else seg.style.clear_meta_and_links())
            for seg in strip
            for char in seg.text
        ]
        for strip in strips
    ]


def lines(app: App[Any]) -> list[str]:
    """The text on screen, one string per line, without the scrollbar column."""
    return ["".join(text for text, _ in line)[:40].rstrip() for line in styled(app)]


def rows(app: App[Any]) -> list[list[str]]:
    """The cells on screen below the header (cells here hold no spaces)."""
    return [line.split() for line in lines(app)[1:] if line.strip()]


def highlighted(app: App[Any], table: LiveTable) -> list[str]:
    """The lines drawn in the cursor's colours."""
    cursor = table.get_component_rich_style("live-table--cursor").bgcolor
    return [
        "".join(text for text, _ in line)[:40].rstrip()
        for line in styled(app)
        if line and line[0][1] is not None and line[0][1].bgcolor == cursor
    ]


Script = Callable[[Any, Callable[[], Awaitable[None]]], Awaitable[None]]


async def screens(table: LiveTable | DataTable[Any], script: Script) -> list[Any]:
    """Run ``script`` on ``table``; every ``look()`` in it records the styled screen."""
    seen: list[Any] = []
    app = One(table)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()

        async def look() -> None:
            await pilot.pause()
            seen.append(styled(app))

        await script(table, look)
    return seen


async def same_as_plain(script: Script, widths: tuple[int | None, ...] = (6, 8, 8)) -> list[Any]:
    """The screens of ``script`` on a `Grid`, checked equal to a plain DataTable's."""
    live = await screens(Grid(widths), script)
    plain = await screens(Plain(widths), script)
    assert len(live) == len(plain)
    for step, (got, want) in enumerate(zip(live, plain, strict=True)):
        assert text_of(got) == text_of(want), f"text differs at look {step}"
        assert got == want, f"styles differ at look {step}"
    return live


def text_of(screen: list[list[tuple[str, Style | None]]]) -> list[str]:
    return ["".join(text for text, _ in line).rstrip() for line in screen]


def fill(table: Any, n: int) -> None:
    for i in range(n):
        table.put(f"r{i:02}", f"a{i}", f"b{i}")


# --- a Grid on its own: what is drawn --------------------------------------------------


async def test_added_rows_show_in_order_with_all_their_cells() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 3)
        await pilot.pause()
        assert lines(app)[0].split() == ["name", "a", "b"]
        assert rows(app) == [["r00", "a0", "b0"], ["r01", "a1", "b1"], ["r02", "a2", "b2"]]
        grid.put("r03", "a3", "b3")  # one more, after the first frame
        await pilot.pause()
        assert rows(app)[-1] == ["r03", "a3", "b3"]


async def test_a_changed_cell_shows_and_nothing_else_moves() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 5)
        await pilot.pause()
        before = lines(app)
        for value in ("new", "newer", "b2"):  # and back again: nothing cached wins
            grid.put("r02", "a2", value)
            await pilot.pause()
            after = lines(app)
            assert after[3].split() == ["r02", "a2", value]
            assert after[:3] + after[4:] == before[:3] + before[4:]


async def test_a_cell_changed_off_screen_shows_once_scrolled_into_view() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 30)
        await pilot.pause()
        assert ["r25", "a25", "b25"] not in rows(app)
        grid.put("r25", "a25", "late")  # off screen: not written yet
        grid.put("r29", "a29", "last")
        await pilot.pause()
        grid.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        shown = rows(app)
        assert ["r25", "a25", "late"] in shown
        assert shown[-1] == ["r29", "a29", "last"]
        grid.put("r01", "a1", "top")  # now the top is off screen
        grid.move_cursor(row=29, animate=False)
        await pilot.pause()
        await pilot.press("pageup", "pageup", "pageup")  # the keyboard scrolls back up
        await pilot.pause()
        assert grid.scroll_y == 0
        assert rows(app)[1] == ["r01", "a1", "top"]


async def test_rows_never_drawn_show_once_the_table_scrolls_to_them() -> None:
    """Rows added off screen hold only their key until they come into view."""
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 30)
        await pilot.pause()
        await pilot.press("pagedown", "pagedown", "pagedown")
        await pilot.pause()
        assert grid.cursor_row == 29
        shown = rows(app)
        assert shown[-1] == ["r29", "a29", "b29"]
        assert all(len(row) == 3 for row in shown), shown


async def test_a_removed_row_leaves_and_the_rows_below_move_up() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 6)
        await pilot.pause()
        grid.drop("r02")
        await pilot.pause()
        assert [row[0] for row in rows(app)] == ["r00", "r01", "r03", "r04", "r05"]
        assert rows(app)[2] == ["r03", "a3", "b3"]
        grid.put("r04", "a4", "moved")  # a row that moved up still takes updates
        await pilot.pause()
        assert rows(app)[3] == ["r04", "a4", "moved"]
        grid.drop("r05")  # the last row: a blank line is left
        await pilot.pause()
        assert [row[0] for row in rows(app)] == ["r00", "r01", "r03", "r04"]


async def test_sorting_reorders_what_is_drawn_and_later_updates_land_in_place() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        for name, a in (("r00", "c"), ("r01", "a"), ("r02", "d"), ("r03", "b")):
            grid.put(name, a, "x")
        await pilot.pause()
        grid.order()
        await pilot.pause()
        assert rows(app) == [
            ["r01", "a", "x"],
            ["r03", "b", "x"],
            ["r00", "c", "x"],
            ["r02", "d", "x"],
        ]
        grid.put("r00", "c", "hit")  # at index 0 before the sort, at 2 after it
        await pilot.pause()
        assert rows(app)[2] == ["r00", "c", "hit"]
        assert rows(app)[0] == ["r01", "a", "x"]
        grid.order(reverse=True)
        await pilot.pause()
        assert [row[0] for row in rows(app)] == ["r02", "r00", "r03", "r01"]
        assert rows(app)[1] == ["r00", "c", "hit"]


async def test_clearing_empties_the_screen_and_new_rows_draw_fresh() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 30)
        await pilot.pause()
        grid.wipe()
        await pilot.pause()
        assert rows(app) == []
        assert lines(app)[0].split() == ["name", "a", "b"]
        grid.put("r05", "again", "b")  # a key seen before, at a new place
        grid.put("r00", "a0", "fresh")
        await pilot.pause()
        assert rows(app) == [["r05", "again", "b"], ["r00", "a0", "fresh"]]


# --- sorting by value, the mouse, the keys, the strip cache ---------------------------


async def test_a_header_click_sorts_by_the_values_and_a_second_click_reverses() -> None:
    """Column ``b`` holds numbers: 9 sorts before 10, though "10" < "9" as text."""
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        for name, b in (("r00", 10), ("r01", 9), ("r02", 100), ("r03", 2)):
            grid.put(name, "a", b)
        await pilot.pause()
        grid.move_cursor(row=1)
        await pilot.click(Grid, offset=(20, 0))  # b's header: the columns are 8, 10, 10 wide
        await pilot.pause()
        assert lines(app)[0].split() == ["name", "a", "b▲"]
        assert [row[0] for row in rows(app)] == ["r03", "r01", "r00", "r02"]
        assert grid.selected == "r01"  # the cursor stays on its row
        await pilot.click(Grid, offset=(20, 0))
        await pilot.pause()
        assert lines(app)[0].split() == ["name", "a", "b▼"]
        assert [row[0] for row in rows(app)] == ["r02", "r00", "r01", "r03"]
        await pilot.click(Grid, offset=(2, 0))  # ``name`` does not sort: nothing moves
        await pilot.pause()
        assert (grid.sort_column, grid.sort_reverse) == ("b", True)
        assert [row[0] for row in rows(app)] == ["r02", "r00", "r01", "r03"]


async def test_a_click_on_a_row_moves_the_cursor_and_a_second_click_selects_it() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 5)
        await pilot.pause()
        await pilot.click(Grid, offset=(3, 3))  # the third row, below the header
        await pilot.pause()
        assert grid.selected == "r02"
        assert [line.split() for line in highlighted(app, grid)] == [["r02", "a2", "b2"]]
        await pilot.click(Grid, offset=(3, 3))
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.messages == [
            ("highlighted", "r02", 2),
            ("selected", "r02", 2),
            ("highlighted", "r03", 3),
            ("selected", "r03", 3),
        ]


async def test_keys_move_the_cursor_by_rows_and_pages_and_to_either_end() -> None:
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 30)
        await pilot.pause()
        seen = []
        for key in (
            "down",
            "down",
            "up",
            "pagedown",
            "pagedown",
            "ctrl+end",
            "pageup",
            "ctrl+home",
        ):
            await pilot.press(key)
            seen.append(grid.cursor_row)
        assert seen == [1, 2, 1, 12, 23, 29, 18, 0]
        assert grid.scroll_y == 0
        await pilot.press("up")  # nothing above the first row
        assert grid.cursor_row == 0


async def test_a_change_renders_only_the_cells_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows on screen keep their strip: a change renders just the cells that differ;
    moving the cursor renders nothing; a scroll renders only the row that came in."""
    rendered: list[str] = []
    real = live_table.render_cell

    def counting(cell: Any, width: int, console: Any, overflow: str | None = None) -> Any:
        rendered.append(str(cell))
        return real(cell, width, console, overflow)

    monkeypatch.setattr(live_table, "render_cell", counting)
    app = One(Grid())
    async with app.run_test(size=SIZE) as pilot:
        grid = app.table
        assert isinstance(grid, Grid)
        fill(grid, 30)
        await pilot.pause()
        assert sorted(rendered) == sorted(
            ["name", "a", "b", *(c for row in rows(app) for c in row)]
        )
        rendered.clear()
        grid.put("r02", "a2", "new")
        await pilot.pause()
        assert rendered == ["new"]
        rendered.clear()
        grid.move_cursor(row=5)  # the cursor's colours go over the cells as rendered
        grid.put("r25", "a25", "late")  # off screen: nothing to render
        await pilot.pause()
        assert rendered == []
        grid.scroll_to(y=1, animate=False)
        await pilot.pause()
        assert rendered == ["r11", "a11", "b11"]


# --- a Grid against a plain DataTable: the same screens, styles and all ------------


async def test_same_screens_as_a_plain_table_through_adds_updates_removals_sorts() -> None:
    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        fill(t, 8)
        await look()
        t.put("r03", "a3", "changed")
        await look()
        t.move_cursor(row=5)
        await look()
        t.order(reverse=True)  # the cursor stays on r05, now at index 2
        await look()
        t.put("r03", "zz", "changed")
        t.order()
        await look()
        t.drop("r06")
        await look()
        t.put("r06", "a6", "back")
        await look()
        t.wipe()
        await look()
        fill(t, 3)
        await look()

    await same_as_plain(script)


async def test_a_style_change_alone_is_drawn() -> None:
    """Rich's `Text` equality ignores style: a recoloured cell must still be written."""

    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        fill(t, 3)
        t.put("r01", "a1", Text("ok", style="red"))
        await look()
        t.put("r01", "a1", Text("ok", style="green"))
        await look()
        t.put("r01", "a1", Text("ok", style="green", justify="right"))
        await look()

    shown = await same_as_plain(script)
    assert shown[0] != shown[1] != shown[2]


async def test_text_cells_of_every_shape_draw_as_a_plain_table_draws_them() -> None:
    """Text cells draw as DataTable draws them: justify, overflow, spans, wide
    characters, too long, several lines, empty, a tab; under the cursor and not."""
    shapes = [
        Text("left"),
        Text("right", justify="right", style="bold"),
        Text("mid", justify="center", style="on blue"),
        Text("full-width", justify="full"),
        Text("much-too-long-for-it", overflow="ellipsis"),
        Text("much-too-long-for-it", overflow="crop", justify="right"),
        Text("much-too-long-for-it"),
        Text.assemble(("✓ ", "bold green"), ("n1:42", "bold")),
        Text("日本語のセル", style="red"),
        Text("two\nlines", style="italic"),
        Text(""),
        Text("x", no_wrap=False, justify="left"),
        Text("tab\there"),
    ]

    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        for i, cell in enumerate(shapes):
            t.put(f"r{i:02}", cell, shapes[-1 - i])
        await look()
        for row in (0, 4, 9):
            t.move_cursor(row=row)
            await look()
        t.put("r03", Text("changed", justify="right", style="reverse"), Text("b"))
        await look()

    await same_as_plain(script)


async def test_auto_width_columns_widen_for_every_row() -> None:
    """A wide new row widens its column; rows drawn before must be redrawn to match.

    A column without a width grows to the widest cell drawn so far (the
    panes give every column a fixed width).
    """

    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        fill(t, 3)
        await look()
        t.put("r03", "a-much-wider-value", "b3")
        await look()

    live = await same_as_plain(script, widths=(None, None, None))
    assert text_of(live[1])[0].split() == ["name", "a", "b"]
    assert text_of(live[0])[1] != text_of(live[1])[1]  # r00's line did change


async def test_a_table_wider_than_the_screen_scrolls_sideways_focused_or_not() -> None:
    """The header scrolls sideways with the rows; the blurred cursor has its own colours."""

    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        fill(t, 20)
        t.move_cursor(row=3)
        await look()
        t.scroll_to(x=13, animate=False, immediate=True)
        await look()
        t.scroll_to(y=4, animate=False, immediate=True)
        await look()
        t.blur()
        await look()

    shown = await same_as_plain(script, widths=(30, 30, 30))
    assert text_of(shown[0])[0] != text_of(shown[1])[0]  # the header moved sideways
    assert text_of(shown[1])[1] != text_of(shown[2])[1]  # the rows moved up
    assert text_of(shown[2]) == text_of(shown[3]) and shown[2] != shown[3]  # colours only


async def test_random_operations_draw_what_a_plain_table_draws() -> None:
    """A seeded mix of every operation, scrolling included, screen for screen."""

    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        rng = random.Random(7)
        fill(t, 20)
        await look()
        for step in range(36):
            keys = sorted(t.views)
            op = rng.random()
            if op < 0.5 and keys:
                key = rng.choice(keys)
                t.put(key, t.views[key][1], f"v{rng.randrange(100)}")
            elif op < 0.6:
                t.put(f"n{rng.randrange(1000):03}", f"a{rng.randrange(10)}", "new")
            elif op < 0.7 and keys:
                t.drop(rng.choice(keys))
            elif op < 0.8:
                t.order(reverse=rng.random() < 0.5)
            elif op < 0.9:
                t.scroll_to(y=rng.randrange(12), animate=False, immediate=True)
            else:
                t.move_cursor(row=rng.randrange(max(1, t.row_count)), animate=False)
            if step % 3 == 2:  # a frame now and then: some changes come in bursts
                await look()

    await same_as_plain(script)


# --- the processes pane: filtering, and the cursor through a sort -------------------


def proc(pid: int, app: str = "web", state: str = "running", **kw: object) -> ProcView:
    fields: dict[str, object] = dict(
        node="n1", pid=pid, launch="L", app=app, argv=("sleep", "60"),
        state=state, reason="", started_at=100.0, ended_at=None, exit_code=None, signal=None,
        core_dumped=False, cpu_user=0.0, cpu_sys=0.0, rss=0, max_rss=0,
    )  # fmt: skip
    fields.update(kw)
    return ProcView(**fields)  # type: ignore[arg-type]


def procs_app() -> One:
    return One(ProcsTable(clock=lambda: 200.0))


def proc_rows(app: App[Any]) -> list[list[str]]:
    """Key, app, command and state of each process on screen."""
    # The columns are wider than the screen: a horizontal scrollbar follows the rows.
    split = ["".join(text for text, _ in line).split() for line in styled(app)[1:]]
    return [cells[:4] for cells in split if cells and cells[0].startswith("n1:")]


async def test_procs_filter_shows_only_matching_rows_and_updates_apply_to_them() -> None:
    app = procs_app()
    async with app.run_test(size=SIZE) as pilot:
        table = app.table
        assert isinstance(table, ProcsTable)
        table.update_procs([proc(p, "web" if p % 2 else "db") for p in range(1, 7)])
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == [f"n1:{p}" for p in range(1, 7)]
        table.set_query("app:web")
        await pilot.pause()
        assert [row[:2] for row in proc_rows(app)] == [
            ["n1:1", "web"],
            ["n1:3", "web"],
            ["n1:5", "web"],
        ]
        table.update_procs([proc(3, "web", argv=("top",)), proc(4, "db", argv=("top",))])
        await pilot.pause()
        assert proc_rows(app)[1][:3] == ["n1:3", "web", "top"]
        assert [row[0] for row in proc_rows(app)] == ["n1:1", "n1:3", "n1:5"]
        table.update_procs([proc(2, "web")])  # now it matches: it shows, in key order
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:1", "n1:2", "n1:3", "n1:5"]
        table.update_procs([proc(1, "db")])  # no longer matches: it goes, the rest move up
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:2", "n1:3", "n1:5"]
        table.set_query("")  # everything, with what changed while hidden
        await pilot.pause()
        shown = proc_rows(app)
        assert [row[0] for row in shown] == [f"n1:{p}" for p in range(1, 7)]
        assert shown[3][:3] == ["n1:4", "db", "top"]
        assert shown[0][:2] == ["n1:1", "db"]


async def test_procs_cursor_highlight_follows_the_selected_row_through_sorts() -> None:
    app = procs_app()
    async with app.run_test(size=SIZE) as pilot:
        table = app.table
        assert isinstance(table, ProcsTable)
        apps = ["cc", "aa", "dd", "bb", "ee"]
        cpu = [3.0, 1.0, 4.0, 2.0, 5.0]
        table.update_procs([proc(p, apps[p - 1], cpu_user=cpu[p - 1]) for p in range(1, 6)])
        await pilot.pause()
        assert table.select("n1:3")
        await pilot.pause()
        assert [line.split()[0] for line in highlighted(app, table)] == ["n1:3"]
        table.action_sort_reverse()  # by key, descending: n1:3 stays in the middle
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:5", "n1:4", "n1:3", "n1:2", "n1:1"]
        assert [line.split()[0] for line in highlighted(app, table)] == ["n1:3"]
        table.action_sort_next()  # by app: aa bb cc dd ee -> n1:2 n1:4 n1:1 n1:3 n1:5
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:2", "n1:4", "n1:1", "n1:3", "n1:5"]
        assert [line.split()[:2] for line in highlighted(app, table)] == [["n1:3", "dd"]]
        assert table.selected == "n1:3"
        table.update_procs([proc(3, "dd", argv=("moved",), cpu_user=4.0)])  # on the cursor line
        await pilot.pause()
        assert [line.split()[:3] for line in highlighted(app, table)] == [["n1:3", "dd", "moved"]]
        while table.sort_column != "cpu":
            table.action_sort_next()
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:2", "n1:4", "n1:1", "n1:3", "n1:5"]
        table.update_procs([proc(3, "dd", argv=("moved",), cpu_user=0.5)])  # it moves up
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:3", "n1:2", "n1:4", "n1:1", "n1:5"]
        assert [line.split()[:3] for line in highlighted(app, table)] == [["n1:3", "dd", "moved"]]


async def test_procs_sort_by_memory_uses_the_bytes_not_the_text() -> None:
    """9.0M sorts below 10M and 100M, though as text "100M" < "10M" < "9.0M"."""
    app = procs_app()
    async with app.run_test(size=SIZE) as pilot:
        table = app.table
        assert isinstance(table, ProcsTable)
        table.update_procs([proc(1, rss=10 << 20), proc(2, rss=9 << 20), proc(3, rss=100 << 20)])
        while table.sort_column != "rss":
            table.action_sort_next()
        await pilot.pause()
        assert [row[0] for row in proc_rows(app)] == ["n1:2", "n1:1", "n1:3"]


async def test_procs_show_an_app_and_command_as_typed_never_as_markup() -> None:
    app = procs_app()
    async with app.run_test(size=SIZE) as pilot:
        table = app.table
        assert isinstance(table, ProcsTable)
        table.update_procs([proc(1, "[b]x", argv=("[red]hi",))])
        await pilot.pause()
        assert proc_rows(app)[0][1:3] == ["[b]x", "[red]hi"]


async def test_a_screenful_of_changed_rows_is_drawn_over_a_few_frames() -> None:
    """At most ROWS_PER_FRAME rows are redrawn at once; the rest follow, none forgotten."""

    async def script(t: Any, look: Callable[[], Awaitable[None]]) -> None:
        fill(t, 11)
        await look()
        if isinstance(t, Grid):  # all eleven rows on screen change in one call
            for i in range(11):
                t.views[f"r{i:02}"] = (f"r{i:02}", f"a{i}", "new")
            t.draw_changed([f"r{i:02}" for i in range(11)], 0.0)
            assert len(t._deferred) == 11 - ROWS_PER_FRAME  # left for the next frames
        else:
            for i in range(11):
                t.put(f"r{i:02}", f"a{i}", "new")
        await look()

    shown = await same_as_plain(script)
    assert all(line.split()[-1] == "new" for line in text_of(shown[1])[1:12])


def node(state: str = "alive", cpu: float = 1.0, name: str = "n1") -> NodeView:
    return NodeView(
        name=name, address="10.0.0.1:7070", state=state, hostname=name, cpus=2,  # type: ignore[arg-type]
        mem_total=1 << 30, mem_used=1 << 29, cpu_percent=cpu, load1=0.0, last_beat=200.0,
        procs_running=0, procs_total=0, ssh_host="", ssh_port=22, boot_id="b", root="/r",
    )  # fmt: skip


async def test_nodes_figures_wait_for_the_flush_but_a_new_state_shows_at_once() -> None:
    table = NodesTable(clock=lambda: 200.0)
    app = One(table)
    async with app.run_test(size=SIZE) as pilot:
        table.update_nodes([node(cpu=1.0)])  # a new node: drawn at once
        await pilot.pause()
        assert any("1.0%" in line for line in full_lines(app))
        table.update_nodes([node(cpu=42.0)])  # only its figures moved
        await pilot.pause()
        assert not any("42.0%" in line for line in full_lines(app))
        await pilot.pause(FLUSH + 0.1)
        assert any("42.0%" in line for line in full_lines(app))
        table.update_nodes([node("suspect", cpu=43.0)])  # a new state: no waiting
        await pilot.pause()
        assert any("suspect" in line and "43.0%" in line for line in full_lines(app))


def full_lines(app: App[Any]) -> list[str]:
    return ["".join(text for text, _ in line) for line in styled(app)]


async def test_nodes_sort_by_name_and_a_click_on_its_header_reverses() -> None:
    table = NodesTable(clock=lambda: 200.0)
    app = One(table)
    async with app.run_test(size=SIZE) as pilot:

        def names() -> list[str]:
            return [w for line in full_lines(app)[1:] for w in line.split() if w in NAMES]

        table.update_nodes([node(name="n2"), node(name="n1"), node(name="n3")])
        await pilot.pause()
        assert names() == ["n1", "n2", "n3"]
        assert "Node▲" in full_lines(app)[0]
        assert table.selected == "n1"  # as nodes join, the cursor stays on the top row
        await pilot.click(NodesTable, offset=(14, 0))  # Node: the State column is 12 wide
        await pilot.pause()
        assert names() == ["n3", "n2", "n1"]
        assert "Node▼" in full_lines(app)[0]
        await pilot.click(NodesTable, offset=(30, 0))  # Address does not sort
        await pilot.pause()
        assert names() == ["n3", "n2", "n1"]


NAMES = {"n1", "n2", "n3"}
