"""A table for live data, drawn with Textual's Line API, one cached strip per row.

With thousands of rows changing every second, formatting every changed row
costs far more than a frame.  A `LiveTable` keeps no cells of its own: the
subclass holds the latest snapshot per row and says how a row looks
(`row_cells`) and how a column sorts (`sort_key`).  The table asks only for
the rows on screen, when they come into view and when told they changed.

Each row on screen keeps its cells, each cell's rendered segments and the
row's finished `Strip`.  A change drops just that row's strip and the
segments of the cells that differ; rows that leave the screen are
forgotten, and are drawn afresh when they come back.  Every row is one line
high, under a one-line header that stays put while the rows scroll.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = Text | str  # a str is plain text, never markup
SortKey = Callable[[str], Any]  # a row's key -> the value it sorts by in a column
ROWS_PER_FRAME = 6  # changed rows redrawn per frame; the rest follow in the next frames
PAD = 1  # blank cells each side of a column
GROW_WANTS = 40  # a growing column cut shorter than this hides droppable columns
HEADER = 1  # lines of header above the rows
ARROWS = {False: "▲", True: "▼"}  # sort indicator by `sort_reverse`
_PLAIN = Style.null()
_CELL_META: list[Style] = []


_PAD_META = Style(meta={"cell": "pad"})


def _cell_meta(index: int) -> Style:
    """A style that changes nothing drawn but tells cell ``index`` from its neighbours."""
    while len(_CELL_META) <= index:
        _CELL_META.append(Style(meta={"cell": len(_CELL_META)}))
    return _CELL_META[index]


def apart(segments: Iterable[Segment], index: int) -> list[Segment]:
    """Cell ``index``'s segments kept apart from its neighbours' and from its padding.

    Nothing changes on a terminal.  A screenshot (SVG) places each run of
    text at its own column, so neither a glyph a fallback font draws wider
    (● ▁ …) nor blanks at a run's edges (which some renderers squeeze) can
    push the next cells along: rows and their sparklines stay aligned.
    """
    meta, out = _cell_meta(index), []
    for seg in segments:
        text, style = seg.text, seg.style or _PLAIN
        core = text.strip(" ")
        if not core:
            out.append(Segment(text, style + _PAD_META))
            continue
        lead = len(text) - len(text.lstrip(" "))
        end = len(text.rstrip(" "))
        if lead:
            out.append(Segment(text[:lead], style + _PAD_META))
        out.append(Segment(text[lead:end], style + meta))
        if end < len(text):
            out.append(Segment(text[end:], style + _PAD_META))
    return out


def same(a: Cell, b: Cell) -> bool:
    """Equal as drawn (Rich's ``Text.__eq__`` ignores the style and justification)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return (a.plain, a.style, a.justify, a.spans) == (b.plain, b.style, b.justify, b.spans)
    return type(a) is type(b) and a == b


def render_cell(
    cell: Cell, width: int, console: Console, overflow: str | None = None
) -> list[Segment]:
    """One line of ``cell`` fitted to ``width`` cells, padded by `PAD` each side.

    As Rich draws a Text given one line (DataTable's look): its first line
    after wrapping, justified, cropped or ellipsised by its own settings
    (``overflow`` is the column's, for a Text that has none: "ellipsis"
    ends cut text in "…").  The row's style is applied over these segments
    when the row is put together, so a cell is rendered once however the
    row is drawn.
    """
    text = cell if isinstance(cell, Text) else Text(cell)
    lines = text.wrap(
        console,
        width,
        justify=text.justify or "default",
        overflow=text.overflow or overflow or "fold",  # type: ignore[arg-type]
        no_wrap=True if text.no_wrap is None else text.no_wrap,
    )
    first = Text("\n").join(lines[:1])  # as `Text.__rich_console__` joins its lines
    body = Segment.adjust_line_length(list(first.render(console)), width, _PLAIN, pad=True)
    edge = Segment(" " * PAD, _PLAIN)
    return list(Segment.simplify([edge, *body, edge]))


def text_width(cell: Cell) -> int:
    """Cells needed to show ``cell`` whole (its widest line)."""
    plain = cell.plain if isinstance(cell, Text) else cell
    return max((cell_len(line) for line in plain.splitlines()), default=0)


class RowKey(str):
    """A row's key: the string itself, with ``.value`` as Textual's table keys have."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)


@dataclass
class Column:
    """A column: its key, its label, and the width of its content (padding aside).

    ``natural`` is what the column asks for: its fixed width, or for an auto
    column the widest cell drawn so far.  `fit_columns` turns the naturals
    into ``width`` for the space there is: spare width goes to ``grow``
    columns; when short, ``shrink`` columns give way (highest first, down
    to ``min_width``), and before that ``drop`` columns are hidden (highest
    first) until the rest fit at their minimum.
    """

    key: str
    label: str
    width: int
    auto: bool  # the width follows the widest cell drawn so far
    natural: int = 0
    min_width: int = 0  # for shrink columns: the least they are cut to
    grow: int = 0  # share of the spare width
    shrink: int = 0  # order of giving way when short (0: never)
    drop: int = 0  # order of hiding when even the minimums do not fit (0: never)
    overflow: str | None = None  # how cut text ends: "ellipsis" for "…"
    hidden: bool = False

    @property
    def least(self) -> int:
        return min(self.natural, self.min_width) if self.shrink else self.natural


def fit_columns(columns: list[Column], room: int) -> bool:
    """Set each column's ``width`` (and ``hidden``) for ``room`` cells; True if any moved.

    Droppable columns are hidden (highest ``drop`` first) while even the
    minimums do not fit, and while a growing column (the command) is cut
    to less than `GROW_WANTS` cells: what a process runs outranks its start
    time.  With no room known (0) every column takes its natural width.
    """
    before = [(c.width, c.hidden) for c in columns]
    for c in columns:
        c.width, c.hidden = c.natural, False
    if room > 0:
        shown = list(columns)
        drops = sorted((c for c in columns if c.drop), key=lambda c: -c.drop)

        def hide_next() -> None:
            column = drops.pop(0)
            column.hidden = True
            shown.remove(column)

        while drops and sum(c.least + 2 * PAD for c in shown) > room:
            hide_next()
        over = _squeeze(shown, room)
        while drops and any(c.grow and c.width < min(c.natural, GROW_WANTS) for c in shown):
            hide_next()
            over = _squeeze(shown, room)
        growers = [c for c in shown if c.grow]
        if over < 0 and growers:
            spare, weights = -over, sum(c.grow for c in growers)
            for i, c in enumerate(growers):
                share = spare if i == len(growers) - 1 else spare * c.grow // weights
                c.width += share
                spare -= share
    return before != [(c.width, c.hidden) for c in columns]


def _squeeze(shown: list[Column], room: int) -> int:
    """Natural widths, then shrink columns give way (highest first); cells still over."""
    for c in shown:
        c.width = c.natural
    over = sum(c.width + 2 * PAD for c in shown) - room
    for c in sorted((c for c in shown if c.shrink), key=lambda c: -c.shrink):
        if over <= 0:
            break
        give = min(over, c.width - c.least)
        c.width -= give
        over -= give
    return over


class _Row:
    """What is kept of a row on screen: cells, their segments, the finished strips."""

    __slots__ = ("cells", "cursor", "segments", "strip")

    def __init__(self, cells: tuple[Cell, ...]) -> None:
        self.cells = cells
        self.segments: list[list[Segment] | None] = [None] * len(cells)
        self.strip: Strip | None = None
        self.cursor: Strip | None = None  # the row as drawn under the cursor


class RowMessage(Message):
    """Something happened to row ``row_key`` of ``table``, at index ``cursor_row``."""

    def __init__(self, table: LiveTable, cursor_row: int, row_key: str) -> None:
        super().__init__()
        self.table = table
        self.cursor_row = cursor_row
        self.row_key = row_key

    @property
    def control(self) -> LiveTable:
        return self.table


class LiveTable(ScrollView, can_focus=True):
    """Rows keyed by string, a row cursor, and a header that sorts on a click.

    Subclasses say how a row looks with `row_cells`, the time rows are drawn
    at with `now`, and which columns sort, by what value, with `sort_key`.
    """

    ALLOW_SELECT = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("ctrl+home", "cursor_top", "Top", show=False),
        Binding("ctrl+end", "cursor_bottom", "Bottom", show=False),
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
        Binding("home", "scroll_home", "Home", show=False),
        Binding("end", "scroll_end", "End", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"live-table--header", "live-table--cursor"}

    # DataTable's look, so the panes read as they always have.
    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        scrollbar-size-vertical: 1;
        &:focus {
            background-tint: $foreground 5%;
            & > .live-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .live-table--header {
                background-tint: $foreground 5%;
            }
        }
        & > .live-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .live-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class RowHighlighted(RowMessage):
        """The cursor moved to row ``row_key``, at index ``cursor_row``."""

    class RowSelected(RowMessage):
        """Row ``row_key`` was chosen: Enter, or a click on the cursor's row."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns: list[Column] = []
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._order: list[RowKey] = []  # row keys top to bottom
        self._pos: dict[str, int] = {}  # RowKey -> index; the indices are stale while _stale
        self._stale = False  # rows were removed: _order and the indices need compacting
        self._ghosts: set[str] = set()  # keys removed since the last compaction
        self._cursor = 0
        self._rows: dict[str, _Row] = {}  # the rows on screen, as drawn
        self._header: tuple[object, Strip] | None = None
        self._styles_at: tuple[object, ...] = ()
        self._base = self._cursor_pre = self._cursor_post = self._header_style = _PLAIN
        self._deferred: set[str] = set()  # changed rows on screen still to redraw
        self._deferred_due = False  # a call to draw them is scheduled
        self._size_due = False  # a virtual size update is scheduled
        self._scroll_due = False  # the cursor waits for a first layout to scroll to
        self._fitted_room = -1  # the room the columns were last fitted to

    # --- what subclasses say ------------------------------------------------------
    def row_cells(self, key: str, now: float) -> tuple[Cell, ...]:
        """The cells of row ``key`` as they should look at ``now``."""
        raise NotImplementedError

    def now(self) -> float:
        """The time rows are drawn at (subclasses hold the clock)."""
        raise NotImplementedError

    def sort_key(self, column: str) -> SortKey | None:
        """How rows sort by ``column``: a row's key to its value (None: not sortable)."""
        return None

    # --- columns and rows ---------------------------------------------------------
    def add_column(
        self,
        label: str,
        *,
        key: str,
        width: int | None = None,
        min_width: int = 0,
        grow: int = 0,
        shrink: int = 0,
        drop: int = 0,
        overflow: str | None = None,
    ) -> None:
        """Add a column ``width`` cells wide, or as wide as its widest cell when None.

        ``grow``, ``shrink``, ``min_width`` and ``drop`` say how it gives or
        takes width when the table is narrower or wider than its columns
        (see `Column`).
        """
        auto = width is None
        arrow = 1 if self.sort_key(key) is not None else 0  # room for the sort arrow
        natural = cell_len(label) + arrow if auto else width or 0
        column = Column(key, label, natural, auto, natural, min_width, grow, shrink, drop, overflow)
        self.columns.append(column)
        self._relayout()

    def clear_columns(self) -> None:
        """Remove every column (rows stay; add the new columns next)."""
        self.columns.clear()
        self._relayout()

    def add_live_row(self, key: str) -> None:
        """Append row ``key``; its cells are asked for once it is on screen."""
        if key in self._pos:
            return
        if key in self._ghosts:  # removed a moment ago: its old place must go first
            self._compact()
        row_key = RowKey(key)
        self._order.append(row_key)
        index = self._pos[row_key] = len(self._order) - 1
        self._resize()
        if not self._stale and index < self._window()[1]:
            self.refresh_line(index + HEADER)

    def drop_live_row(self, key: str) -> None:
        """Remove row ``key`` if it is shown."""
        if key not in self._pos:
            return
        del self._pos[key]
        self._ghosts.add(key)
        self._stale = True
        self._rows.pop(key, None)
        self._resize()
        self.refresh()

    def clear(self) -> None:
        """Remove every row (the columns stay)."""
        self._order, self._stale, self._cursor = [], False, 0
        self._pos.clear()
        self._ghosts.clear()
        self._rows.clear()
        self._deferred.clear()
        self._resize()
        self.refresh()

    @property
    def rows(self) -> KeysView[RowKey]:
        """The keys of the rows shown: ``key in rows`` takes a plain string."""
        return cast("KeysView[RowKey]", self._pos.keys())

    @property
    def row_count(self) -> int:
        return len(self._pos)

    def get_row_index(self, key: str) -> int:
        """Where row ``key`` is, counted from the top."""
        self._ordered()
        return self._pos[key]

    def get_row_at(self, index: int) -> list[Cell]:
        """The cells of the row at ``index`` as they look now."""
        return list(self.row_cells(self._ordered()[index], self.now()))

    def get_cell(self, key: str, column: str) -> Cell:
        """The cell of row ``key`` in ``column`` as it looks now."""
        index = next(i for i, c in enumerate(self.columns) if c.key == column)
        return self.row_cells(key, self.now())[index]

    # --- bringing rows up to date ---------------------------------------------------
    def draw_row(self, key: str, now: float) -> None:
        """Redraw row ``key`` if it is on screen and a cell of it changed.

        Only its line is repainted, and only the cells that differ are rendered.
        """
        row = self._rows.get(key)
        if row is None:
            return  # off screen: drawn afresh when it comes into view
        cells = self.row_cells(key, now)
        segments = row.segments
        changed = False
        for i, (new, old) in enumerate(zip(cells, row.cells, strict=True)):
            if not same(new, old):
                segments[i] = None
                changed = True
        if not changed:
            return
        row.cells, row.strip, row.cursor = cells, None, None
        if not self._fit(cells):
            self.refresh_line(self.get_row_index(key) + HEADER)

    def draw_changed(self, keys: Iterable[str], now: float) -> None:
        """Redraw just the rows among ``keys`` that are on screen.

        At most `ROWS_PER_FRAME` now: a node's beat changes all its rows at
        once, and a screenful of changed rows would take longer than a frame
        to render.  The rest are drawn after the next frame, and so on.
        """
        waiting, fresh = self._deferred, set(keys)
        drawn = [k for k in self.visible_keys() if k in self._rows]
        # Rows waiting since an earlier call go first: none waits for long.
        todo = [k for k in drawn if k in waiting]
        todo += [k for k in drawn if k in fresh and k not in waiting]
        for key in todo[:ROWS_PER_FRAME]:
            self.draw_row(key, now)
        self._deferred = set(todo[ROWS_PER_FRAME:])
        if self._deferred and not self._deferred_due:
            self._deferred_due = True
            self.call_after_refresh(self._draw_deferred)

    def _draw_deferred(self) -> None:
        self._deferred_due = False
        if self._deferred:
            self.draw_changed((), self.now())

    def draw_visible(self, now: float) -> None:
        """Bring every row on screen up to date (cheap when nothing changed)."""
        for key in self.visible_keys():
            self.draw_row(key, now)

    def start_ticking(self, delay: float = 0.0) -> None:
        """Keep clock-driven cells (ages, run times) current, starting after ``delay`` s."""
        self.set_timer(delay + 1.0, lambda: self.set_interval(1.0, self.tick))

    def tick(self) -> None:
        """Once a second: bring the rows on screen up to date with the clock.

        As for any change, `ROWS_PER_FRAME` rows now and the rest over the
        next frames, so no frame redraws a screenful.
        """
        self.draw_changed(self.visible_keys(), self.now())

    def visible_keys(self) -> list[str]:
        """Keys of the rows that can be on screen now."""
        top, bottom = self._window()
        return list(self._ordered()[top:bottom])

    # --- sorting ----------------------------------------------------------------
    def sort_by(self, column: str, reverse: bool = False) -> None:
        """Order the rows by ``column``'s values (see `sort_key`); the header shows it."""
        if self.sort_key(column) is not None:
            self.sort_column, self.sort_reverse = column, reverse
            self.resort()

    def resort(self, keep_cursor: bool = True) -> None:
        """Order the rows again by `sort_column`.

        The cursor stays on its row, or with ``keep_cursor=False`` at its
        index (the top row stays selected while rows arrive).
        """
        by = None if self.sort_column is None else self.sort_key(self.sort_column)
        if by is None:
            return
        keep = self.selected if keep_cursor else None
        self._reorder(sorted(self._ordered(), key=by, reverse=self.sort_reverse))
        self.refresh()
        if keep is not None:
            self.move_cursor(row=self._pos[keep])
        self.draw_visible(self.now())

    # --- the cursor ---------------------------------------------------------------
    @property
    def cursor_row(self) -> int:
        """The cursor's index (it stays put when rows go, within the rows left)."""
        return max(0, min(self._cursor, len(self._pos) - 1))

    @property
    def selected(self) -> str | None:
        """The key of the row under the cursor (None: no rows)."""
        return str(self._ordered()[self.cursor_row]) if self._pos else None

    def move_cursor(self, *, row: int, animate: bool = False, scroll: bool = True) -> None:
        """Put the cursor on the row at index ``row`` (clamped to the rows there are)."""
        old = self.cursor_row
        self._cursor = max(0, min(row, len(self._pos) - 1))
        new = self.cursor_row
        if scroll:
            self._scroll_to_cursor(animate)
        if new != old:
            self.refresh_line(old + HEADER)
            self.refresh_line(new + HEADER)
        if new != old and self._pos:
            self.post_message(self.RowHighlighted(self, new, self._ordered()[new]))

    def _scroll_to_cursor(self, animate: bool = False) -> None:
        self._sync_size()
        page = self._page()
        if page <= 0:  # not laid out yet: once it is
            if not self._scroll_due:
                self._scroll_due = True
                self.call_after_refresh(self._scroll_after_layout)
            return
        row, top = self.cursor_row, self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=animate, force=True)
        elif row >= top + page:
            self.scroll_to(y=row - page + 1, animate=animate, force=True)

    def _scroll_after_layout(self) -> None:
        if self._page() > 0:
            self._scroll_to_cursor()
        self._scroll_due = False

    # --- keys and the mouse -------------------------------------------------------
    def action_cursor_up(self) -> None:
        self.move_cursor(row=self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self.cursor_row + 1)

    def action_page_up(self) -> None:
        page = self._page()
        self._sync_size()
        self.scroll_to(y=self.scroll_y - page, animate=False, force=True)
        self.move_cursor(row=self.cursor_row - page)

    def action_page_down(self) -> None:
        page = self._page()
        self._sync_size()
        self.scroll_to(y=self.scroll_y + page, animate=False, force=True)
        self.move_cursor(row=self.cursor_row + page)

    def action_cursor_top(self) -> None:
        self.move_cursor(row=0)

    def action_cursor_bottom(self) -> None:
        self.move_cursor(row=len(self._pos) - 1)

    def action_scroll_home(self) -> None:
        self.scroll_to(x=0, animate=False)

    def action_scroll_end(self) -> None:
        self._sync_size()
        self.scroll_to(x=self.max_scroll_x, animate=False)

    def action_select_cursor(self) -> None:
        key = self.selected
        if key is not None:
            self.post_message(self.RowSelected(self, self.cursor_row, key))

    async def _on_click(self, event: events.Click) -> None:
        """A click on the header sorts by that column; on a row, it moves the cursor there."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        x, y = offset.x + self.scroll_offset.x, offset.y
        if y < HEADER:
            column = self._column_at(x)
            if column is not None:
                reverse = column == self.sort_column and not self.sort_reverse
                self.sort_by(column, reverse)
            return
        row = self.scroll_offset.y + y - HEADER
        if row < len(self._pos):
            event.stop()
            if row == self.cursor_row:
                self.action_select_cursor()
            else:
                self.move_cursor(row=row)

    def _column_at(self, x: int) -> str | None:
        left = 0
        for column in self.columns:
            if column.hidden:
                continue
            left += column.width + 2 * PAD
            if x < left:
                return column.key
        return None

    # --- drawing --------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        self._sync_styles()
        self._draw_window()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        if y < HEADER:
            strip = self._header_strip()
        else:
            index = scroll_y + y - HEADER
            order = self._ordered()
            if index >= len(order):
                return Strip.blank(width, self._base)
            strip = self._row_strip(order[index], index == self.cursor_row)
        return strip.crop_extend(scroll_x, scroll_x + width, self._base)

    def _sync_styles(self) -> None:
        """Read the styles rows are drawn in; a change (focus, theme, width) redraws all."""
        base = self.rich_style
        cursor = self.get_component_rich_style("live-table--cursor")
        header = self.get_component_rich_style("live-table--header")
        styles = (base, cursor, header, self.size.width)
        if styles != self._styles_at:
            self._styles_at = styles
            self._base, self._cursor_pre, self._header_style = base, base + cursor, header
            # The cursor's foreground wins over a cell's own, as in DataTable.
            self._cursor_post = Style.from_color(color=cursor.color)
            self._header = None
            for row in self._rows.values():
                row.strip = row.cursor = None
        if self._room() != self._fitted_room:  # resized, or a scrollbar came or went
            self._fitted_room = self._room()
            self._fit_room()

    def _draw_window(self) -> None:
        """Forget the rows that left the screen; take the cells of those that came."""
        top, bottom = self._window()
        rows, order = self._rows, self._ordered()
        window = set(order[top:bottom])
        for key in [k for k in rows if k not in window]:
            del rows[key]
        now = None
        for key in order[top:bottom]:
            if key not in rows:
                now = self.now() if now is None else now
                cells = self.row_cells(key, now)
                rows[key] = _Row(cells)
                self._fit(cells)

    def _row_strip(self, key: str, cursor: bool) -> Strip:
        row = self._rows.get(key)
        if row is None:  # an auto-width column widened during this render pass
            row = self._rows[key] = _Row(self.row_cells(key, self.now()))
        if cursor:
            if row.cursor is None:
                row.cursor = self._assemble(row, self._cursor_pre, self._cursor_post)
            return row.cursor
        if row.strip is None:
            row.strip = self._assemble(row, self._base, None)
        return row.strip

    def _assemble(self, row: _Row, style: Style, post: Style | None) -> Strip:
        """The row's line: its cells' segments (rendered where missing) in ``style``."""
        console, segments = self.app.console, row.segments
        line: list[Segment] = []
        for i, column in enumerate(self.columns):
            if column.hidden:
                continue
            part = segments[i]
            if part is None:
                cell, width = row.cells[i], column.width
                part = render_cell(cell, width, console, column.overflow)
                part = segments[i] = apart(part, i)  # its own runs, even in the cursor row
            line += part
        return self._finish(list(Segment.apply_style(line, style, post)), style)

    def _header_strip(self) -> Strip:
        key = (self.sort_column, self.sort_reverse)
        if self._header is None or self._header[0] != key:
            console, line = self.app.console, []
            for i, column in enumerate(self.columns):
                if column.hidden:
                    continue
                arrow = ARROWS[self.sort_reverse] if column.key == self.sort_column else ""
                label = Text(column.label + arrow)
                part = render_cell(label, column.width, console, column.overflow)
                line += apart(part, i)  # as rows do
            style = self._header_style
            strip = self._finish(list(Segment.apply_style(line, style)), style)
            self._header = (key, strip)
        return self._header[1]

    def _finish(self, line: list[Segment], style: Style) -> Strip:
        """A strip of ``line``, its style carried to the widget's right edge."""
        width = self._table_width()
        extra = max(0, self.size.width - width)
        if extra:
            line.append(Segment(" " * extra, style))
        return Strip(line, width + extra)

    # --- geometry -----------------------------------------------------------------
    def _table_width(self) -> int:
        return sum(column.width + 2 * PAD for column in self.columns if not column.hidden)

    def _room(self) -> int:
        """Cells the columns may fill: the width inside the vertical scrollbar."""
        return self.scrollable_content_region.width

    def _fit_room(self) -> bool:
        """Fit the columns to the room there is; True (and all redrawn) if any moved."""
        if not fit_columns(self.columns, self._room()):
            return False
        self._redraw_all()
        return True

    def _page(self) -> int:
        """Rows that fit on screen below the header."""
        return max(0, self.scrollable_content_region.height - HEADER)

    def _window(self) -> tuple[int, int]:
        """Indices of the first row on screen and of the one after the last."""
        top = self.scroll_offset.y
        # Before the first layout the table has no size: the screen bounds what shows.
        height = self.scrollable_content_region.height or self.app.size.height
        return top, min(len(self._pos), top + max(0, height - HEADER))

    def _fit(self, cells: tuple[Cell, ...]) -> bool:
        """Widen auto-width columns to ``cells``; True if any widened."""
        wider = False
        for column, cell in zip(self.columns, cells, strict=True):
            if column.auto and (width := text_width(cell)) > column.natural:
                column.natural, wider = width, True
        if wider and fit_columns(self.columns, self._room()):
            self._redraw_all()
            return True
        return False  # no width moved (a grown column had room for it): rows stand

    def _relayout(self) -> None:
        """The columns changed: fit them again; every row on screen is drawn afresh."""
        fit_columns(self.columns, self._room())
        self._redraw_all()

    def _redraw_all(self) -> None:
        self._header = None
        self._rows.clear()
        self._resize()
        self.refresh()

    def _resize(self) -> None:
        """The virtual size changed; set it once for a burst of row changes."""
        if not self._size_due:
            self._size_due = True
            self.call_later(self._sync_size)

    def _sync_size(self) -> None:
        self._size_due = False
        self.virtual_size = Size(self._table_width(), len(self._pos) + HEADER)

    # --- the row order ------------------------------------------------------------
    def _ordered(self) -> list[RowKey]:
        """The row keys top to bottom, with `_pos` indices up to date."""
        if self._stale:
            self._compact()
        return self._order

    def _compact(self) -> None:
        pos = self._pos
        self._reorder([key for key in self._order if key in pos])

    def _reorder(self, order: list[RowKey]) -> None:
        # In place: `rows` hands out a view of this very dict.
        self._order, self._stale = order, False
        self._ghosts.clear()
        self._pos.clear()
        self._pos.update((key, i) for i, key in enumerate(order))
