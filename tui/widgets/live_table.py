"""A DataTable for live data whose cells are drawn only where they can be seen.

With thousands of rows changing every second, formatting every changed row
and pushing each cell into the table costs far more than a frame.  A
`LiveTable` keeps the latest snapshot per row elsewhere (the subclass's
``views``) and brings a row's cells up to date only while the row is on
screen: when it changes, and when it scrolls, sorts or filters into view.
Only the cells whose content differs from what is shown are written.

DataTable also forgets everything it rendered whenever any one cell changes:
it rebuilds its row order and line map (O(rows)) and re-renders every cell
on screen (about 0.1 ms each).  Here every row is one line high, so the
order is kept until it changes (a row added or removed, a sort, a clear),
and a rendered cell or row is reused while the same cell objects sit at the
same place with the same style.  Both caches are private overrides of DataTable;
`tests/tui/test_live_table.py` checks that what is drawn stays right.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, cast

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._types import SegmentLines
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, Row, RowKey

Cell = Text | str
ROWS_PER_FRAME = 6  # changed rows redrawn per frame; the rest follow in the next frames


def same(a: Cell, b: Cell) -> bool:
    """Equal as drawn (Rich's ``Text.__eq__`` ignores the style and justification)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return (a.plain, a.style, a.justify, a.spans) == (b.plain, b.style, b.justify, b.spans)
    return type(a) is type(b) and a == b


class LiveTable(DataTable[Cell]):
    """Rows keyed by string; subclasses say how a row looks with `row_cells`."""

    def __init__(self, columns: Sequence[str], **kwargs: object) -> None:
        self._column_keys = tuple(columns)
        self._drawn: dict[str, tuple[Cell, ...]] = {}
        # Set before DataTable's __init__, which already reads the row order.
        self._order = 0  # bumped whenever the row order may have changed
        self._rows_at = -1
        self._ordered: list[Row] = []
        self._offsets: list[tuple[RowKey, int]] = []
        self._cells_memo: dict[Any, Any] = {}  # see `_memo`
        self._rows_memo: dict[Any, Any] = {}
        self._deferred: set[str] = set()  # changed rows on screen still to redraw
        self._deferred_due = False  # a call to draw them is scheduled
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def row_cells(self, key: str, now: float) -> tuple[Cell, ...]:
        """The cells of row ``key`` as they should look at ``now``."""
        raise NotImplementedError

    # --- rows ----------------------------------------------------------------
    def add_live_row(self, key: str, *cells: Cell) -> None:
        """Append row ``key`` with its leading ``cells``; the rest are drawn once on screen."""
        row = (*cells, *("",) * (len(self._column_keys) - len(cells)))
        self.add_row(*row, key=key)
        self._drawn[key] = row

    def drop_live_row(self, key: str) -> None:
        if key in self.rows:
            self.remove_row(key)
        self._drawn.pop(key, None)

    def draw_row(self, key: str, now: float) -> None:
        """Write the cells of ``key`` that differ from what the table holds.

        Unlike `update_cell`, which repaints the whole table for each cell,
        this repaints just the row's line, once.
        """
        drawn = self._drawn.get(key)
        if drawn is None:
            return
        held = self._data[RowKey(key)]
        kept = []  # the objects the table holds: a rendered cell is reused by identity
        cells = self.row_cells(key, now)
        for column, new, old in zip(self._column_keys, cells, drawn, strict=True):
            if same(new, old):
                kept.append(old)
            else:
                held[ColumnKey(column)] = new
                kept.append(new)
        if any(map(operator.is_not, kept, drawn)):
            self._drawn[key] = tuple(kept)
            self._update_count += 1  # DataTable's own caches key on this
            self.refresh_row(self.get_row_index(key))

    def draw_changed(self, keys: Iterable[str], now: float) -> None:
        """Redraw just the rows among ``keys`` that are on screen.

        At most `ROWS_PER_FRAME` now: a node's beat changes all its rows at
        once, and a screenful of changed rows would take longer than a frame
        to render.  The rest are drawn after the next frame, and so on.
        """
        waiting, fresh = self._deferred, set(keys)
        visible = self.visible_keys()
        # Rows waiting since an earlier call go first: none waits for long.
        todo = [k for k in visible if k in waiting]
        todo += [k for k in visible if k in fresh and k not in waiting]
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
        """Keys of the rows that can be on screen now (every row is one line)."""
        top = int(self.scroll_y)
        # Before the first layout the table has no size: the screen bounds what shows.
        height = self.size.height or self.app.size.height
        bottom = min(self.row_count, top + height + 1)
        cell = self.coordinate_to_cell_key
        return [str(cell(Coordinate(row, 0)).row_key.value) for row in range(top, bottom)]

    # --- the row order, cached until it changes -------------------------------
    @property
    def ordered_rows(self) -> list[Row]:
        if self._rows_at != self._order:
            key_at = self._row_locations.get_key
            self._ordered = [self.rows[cast(RowKey, key_at(i))] for i in range(self.row_count)]
            self._offsets = [(row.key, 0) for row in self._ordered]
            self._rows_at = self._order
        return self._ordered

    @property
    def _y_offsets(self) -> list[tuple[RowKey, int]]:
        self.ordered_rows  # noqa: B018 (brings the line map up to date)
        return self._offsets

    # The order is marked changed after the change: DataTable may read it midway.
    def add_row(self, *cells: Cell, **kwargs: Any) -> RowKey:
        key = super().add_row(*cells, **kwargs)
        self._order += 1
        return key

    def remove_row(self, row_key: RowKey | str) -> None:
        super().remove_row(row_key)
        self._order += 1

    def sort(self, *columns: Any, **kwargs: Any) -> LiveTable:
        super().sort(*columns, **kwargs)
        self._order += 1
        return self

    def clear(self, columns: bool = False) -> LiveTable:
        super().clear(columns)
        self._drawn.clear()
        self._order += 1
        return self

    # --- rendered cells and rows, kept while their cell objects are the same ----
    def _held(self, row_index: int) -> tuple[object, ...] | None:
        """The objects the table holds for row ``row_index`` (-1: the header)."""
        if row_index < 0:
            return tuple(column.label for column in self.ordered_columns)
        key = self._row_locations.get_key(row_index)
        return None if key is None else self._drawn.get(str(key.value))

    def _memo(self, memo: dict[Any, Any], key: Any, held: Any, render: Any) -> Any:
        hit = memo.get(key)
        if hit is not None and len(hit[0]) == len(held) and all(map(operator.is_, hit[0], held)):
            return hit[1]
        if len(memo) > 4096:
            memo.clear()
        result = render()
        memo[key] = (held, result)
        return result

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        args = (row_index, column_index, base_style, width, cursor, hover)
        held = self._held(row_index)
        if held is None or column_index < 0:  # row labels: as DataTable does
            return super()._render_cell(*args)
        key = (*args, self._show_hover_cursor, self._pseudo_class_state)
        cell = held[column_index]
        if isinstance(cell, Text) and self._plain_layout(row_index):
            render = partial(self._render_text_cell, cell, *args)
        else:
            render = partial(super()._render_cell, *args)
        lines: SegmentLines = self._memo(self._cells_memo, key, (cell,), render)
        return lines

    def _plain_layout(self, row_index: int) -> bool:
        """One-line rows, no fixed rows or columns: what `_render_text_cell` draws."""
        if self.fixed_rows or self.fixed_columns or row_index < 0:
            return False
        key = self._row_locations.get_key(row_index)
        return key is not None and self.rows[key].height == 1

    def _render_text_cell(
        self,
        cell: Text,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        """What DataTable draws for a one-line Text cell, without Rich's general pipeline.

        DataTable renders ``Styled(Padding(cell, (0, pad)), pre, post)`` through
        the console: the same text wrapped to one line, padded with unstyled
        spaces, then styled.  That pipeline costs most of a frame when a screen
        of cells change; `tests/tui/test_live_table.py` checks the two agree.
        """
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index})
        component, post = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        console = self.app.console
        pad = self.cell_padding
        inner = max(0, width - 2 * pad)
        justify = cell.justify or "default"
        overflow = cell.overflow or "fold"
        no_wrap = True if cell.no_wrap is None else cell.no_wrap
        lines = cell.wrap(console, inner, justify=justify, overflow=overflow, no_wrap=no_wrap)
        first = lines[0] if lines else Text()
        blank = Style.null()
        body = Segment.adjust_line_length(
            list(Text("\n").join([first]).render(console)), inner, blank, pad=True
        )
        edge = [Segment(" " * pad, blank)] if pad else []
        line = list(Segment.apply_style([*edge, *body, *edge], pre + component, post))
        return [line]

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        args = (row_key, line_no, base_style, cursor_location, hover_location)
        row_index = -1 if row_key is self._header_row_key else self._row_locations.get(row_key)
        held = None if row_index is None else self._held(row_index)
        if held is None:
            return super()._render_line_in_row(*args)
        key = (
            *args,
            row_index,
            self.size.width,
            # Auto-width columns widen as rows come: a row's cells then move.
            tuple(column.get_render_width(self) for column in self.ordered_columns),
            self.cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        render = partial(super()._render_line_in_row, *args)
        pair: tuple[SegmentLines, SegmentLines] = self._memo(self._rows_memo, key, held, render)
        return pair

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._cells_memo.clear()
        self._rows_memo.clear()

    def notify_style_update(self) -> None:
        self._cells_memo.clear()
        self._rows_memo.clear()
        super().notify_style_update()

    # --- what brings rows into view ------------------------------------------
    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if round(old) != round(new):
            self.draw_visible(self.now())

    def on_resize(self) -> None:
        self.draw_visible(self.now())

    def now(self) -> float:
        """The time rows are drawn at (subclasses hold the clock)."""
        raise NotImplementedError
