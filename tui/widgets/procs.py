"""The processes pane: filterable, sortable, with marks and escalation countdowns.

Rows change one at a time: `refresh_keys` (or `update_procs`, given the
snapshots) adds, updates or removes only the rows it is given.  The table
keeps a snapshot of every process (also those the filter hides) so a filter
change needs no trip to the master.  Snapshots are pulled from the model
only when read (`Snapshots`), and cells are drawn only for rows on screen
(see `LiveTable`): with the default sort and no filter, ten thousand
processes changing every second cost what the visible rows cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message

from corral.master.model import ProcView
from corral.tui import format as fmt
from corral.tui.tally import view_kind
from corral.tui.widgets.live_table import LiveTable

# (name, label, layout): widths come from the content (see `LiveTable.add_column`).
# Command takes the spare width and gives way first when short; Reason is as
# wide as what it says.  When even the minimums do not fit, PID and Node go
# first (if chosen), then Max RSS, Started and CPU s: at 80 columns those three.
COLUMNS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("key", "  NODE:PID", {}),  # two columns of it show the mark
    ("node", "Node", {"shrink": 2, "min_width": 6, "drop": 4}),
    ("pid", "PID", {"drop": 5}),
    ("app", "App", {"shrink": 1, "min_width": 6}),
    ("command", "Command", {"grow": 1, "shrink": 3, "min_width": 12}),
    ("state", "State", {}),
    ("reason", "Reason", {"shrink": 2, "min_width": 7}),
    ("cpu", "CPU s", {"drop": 1}),
    ("cpu%", "CPU%", {}),
    ("rss", "RSS", {}),
    ("max_rss", "MaxRSS", {"drop": 3}),
    ("start", "Started", {"drop": 2}),
    ("run", "Run", {}),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)
DEFAULT_COLUMNS = tuple(n for n in COLUMN_NAMES if n not in ("node", "pid"))
ALIASES = {"node:pid": "key", "cpu_percent": "cpu%", "maxrss": "max_rss", "started": "start"}
_LAYOUT = {name: layout for name, _, layout in COLUMNS}
_LABELS = {name: label for name, label, _ in COLUMNS}
STABLE = frozenset({"key", "node", "pid", "app", "command", "start"})  # never change

SortKey = Callable[[ProcView, float], Any]
SORT_KEYS: dict[str, SortKey] = {
    "key": lambda p, now: (p.node, p.pid),
    "node": lambda p, now: (p.node, p.pid),
    "pid": lambda p, now: (p.pid, p.node),
    "app": lambda p, now: (p.app, p.node, p.pid),
    "command": lambda p, now: (p.command, p.node, p.pid),
    "state": lambda p, now: (p.state, p.node, p.pid),
    "reason": lambda p, now: (p.reason, p.node, p.pid),
    "cpu": lambda p, now: (p.cpu_time, p.node, p.pid),
    "cpu%": lambda p, now: (_or(cpu_percent(p), -1.0), p.node, p.pid),
    "rss": lambda p, now: (p.rss, p.node, p.pid),
    "max_rss": lambda p, now: (p.max_rss, p.node, p.pid),
    "start": lambda p, now: (p.started_at, p.node, p.pid),
    "run": lambda p, now: (p.run_time(now), p.node, p.pid),
}


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def cpu_percent(view: ProcView) -> float | None:
    """The process's CPU % of one core, when the master has it."""
    value = getattr(view, "cpu_percent", None)
    return None if value is None else float(value)


def columns_named(names: Sequence[str]) -> tuple[str, ...]:
    """The column keys for ``names`` (as a settings file spells them); ValueError if unknown."""
    out = []
    for name in names:
        key = ALIASES.get(name.lower(), name.lower())
        if key not in _LABELS:
            raise ValueError(f"unknown column: {name}")
        out.append(key)
    return tuple(out)


def matches(view: ProcView, query: str) -> bool:
    """Every word must match: ``node:N``, ``app:A``, ``state:S`` or any text.

    ``state:`` takes a row's state (sleeping, exited, killed, lost, ...) or
    one of the header's buckets: running, ended, failed (see `tally`).
    """
    for word in query.lower().split():
        field, sep, value = word.partition(":")
        if sep and field == "node":
            ok = view.node.lower() == value
        elif sep and field == "app":
            ok = view.app.lower() == value
        elif sep and field == "state":  # the row's own word, or the header's bucket
            ok = value in (view.state, view_kind(view)) or (value == "alive" and view.alive)
        else:
            hay = f"{view.key} {view.app} {view.command} {view.state} {view.reason}"
            ok = word in hay.lower()
        if not ok:
            return False
    return True


def filter_title(query: str) -> Text:
    """The processes pane's title: every active filter word shows in it."""
    title = Text("Processes")
    if query.strip():
        title.append(" · filter: ")
        title.append(" ".join(query.split()), style="bold yellow")
        title.append(" · esc clears", style="dim")
    return title


def cpu_text(view: ProcView) -> str:
    """CPU % of one core while alive; "-" when ended or not known."""
    value = cpu_percent(view)
    return "-" if value is None or not view.alive else f"{value:.1f}"


class Snapshots(Mapping[str, ProcView]):
    """The table's snapshot of each process, pulled from ``source`` when read.

    `invalidate` marks one out of date; the next read pulls it again.  A pull
    that finds the process gone keeps the last snapshot: its removal comes
    as a change of its own.
    """

    def __init__(self, source: Callable[[str], ProcView | None] | None = None) -> None:
        self.source = source
        self._views: dict[str, ProcView] = {}
        self._stale: set[str] = set()

    def __getitem__(self, key: str) -> ProcView:
        if key in self._stale:
            self._stale.discard(key)
            fresh = self.source(key) if self.source is not None else None
            if fresh is not None:
                self._views[key] = fresh
        return self._views[key]

    def __contains__(self, key: object) -> bool:
        return key in self._views

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def add(self, key: str) -> bool:
        """Pull ``key``, new to the table; False when the source no longer has it."""
        view = self.source(key) if self.source is not None else None
        if view is not None:
            self.put(view)
        return view is not None

    def put(self, view: ProcView) -> None:
        self._views[view.key] = view
        self._stale.discard(view.key)

    def invalidate(self, key: str) -> None:
        if self.source is not None and key in self._views:
            self._stale.add(key)

    def last(self, key: str) -> ProcView | None:
        """The snapshot held now, without pulling a newer one."""
        return self._views.get(key)

    def pop(self, key: str) -> ProcView | None:
        self._stale.discard(key)
        return self._views.pop(key, None)


class ProcsTable(LiveTable):
    """One row per process; the cursor row is the selected process."""

    COLUMN_NAMES = COLUMN_NAMES  # what `set_columns` takes
    BINDINGS = [
        Binding("space", "toggle_mark", "Mark", tooltip="Mark or unmark the process"),
        Binding(
            "escape",
            "clear_marks",
            "Unmark",
            show=False,
            tooltip="Unmark every process; with none marked, clear the filter",
        ),
        Binding("o", "sort_next", "Sort", show=False, tooltip="Sort by the next column"),
        Binding("O", "sort_reverse", "Reverse", show=False, tooltip="Reverse the sort order"),
    ]

    class ClearFilter(Message):
        """Escape with nothing marked: the operator wants every process back."""

    class Selected(Message):
        """The cursor moved to process ``key`` (None: the table is empty)."""

        def __init__(self, key: str | None) -> None:
            super().__init__()
            self.key = key

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        source: Callable[[str], ProcView | None] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.views = Snapshots(source)
        self.marked: set[str] = set()
        self.countdowns: dict[str, int] = {}
        self.query_text = ""
        self.sort_column: str = "key"  # always one: the pane is always sorted
        self.sort_reverse = False
        self._shown_key: str | None = None
        self.shown_columns: tuple[str, ...] = DEFAULT_COLUMNS
        self._cell_makers: list[Callable[[ProcView, float], Text]] = []

    def on_mount(self) -> None:
        self._add_columns()
        self.start_ticking()  # run times grow with the clock

    def set_columns(self, names: Sequence[str]) -> None:
        """Show exactly the columns ``names`` (see `COLUMN_NAMES`), in that order.

        ValueError("unknown column: X") for a name that is not one; nothing changes then.
        """
        keys = columns_named(names)
        if not keys:
            raise ValueError("no columns given")
        self.shown_columns = keys
        if self.is_mounted:
            self._add_columns()

    def _add_columns(self) -> None:
        self.clear_columns()
        for key in self.shown_columns:
            self.add_column(_LABELS[key], key=key, overflow="ellipsis", **_LAYOUT[key])
        self._cell_makers = [self._makers()[key] for key in self.shown_columns]
        self.refresh()

    # --- rows ------------------------------------------------------------
    def update_procs(self, views: Iterable[ProcView], removed: Iterable[str] = ()) -> None:
        """Apply changed snapshots and removals; only rows on screen are redrawn."""
        fresh = {view.key: view for view in views}
        self.refresh_keys(list(fresh), removed, fresh)

    def refresh_keys(
        self,
        keys: Iterable[str],
        removed: Iterable[str] = (),
        fresh: Mapping[str, ProcView] | None = None,
    ) -> None:
        """Processes ``keys`` changed in the source, ``removed`` are gone.

        A changed snapshot is pulled only when something needs it now: a
        row coming on screen, the filter, a sort by a column that moves.
        """
        now = self.clock()
        moved = False  # rows came, went or reordered: what is on screen shifts
        for key in removed:
            self.views.pop(key)
            self.marked.discard(key)
            moved |= self._hide(key)
        changed, shifted, resort = self._take(keys, fresh, now)
        if resort:
            self.resort()
        elif moved or shifted:
            self.draw_visible(now)
        else:
            self.draw_changed(changed, now)
        self._announce()

    def _take(
        self, keys: Iterable[str], fresh: Mapping[str, ProcView] | None, now: float
    ) -> tuple[list[str], bool, bool]:
        """Note ``keys`` as changed: (the keys kept, rows hidden?, order to redo?)."""
        sort_key = None if self.sort_column in STABLE else SORT_KEYS[self.sort_column]
        changed, known, rows, query = [], self.views, self.rows, self.query_text
        moved = resort = False
        for key in keys:  # thousands a second: every lookup here counts
            old = known.last(key)
            if fresh is not None:
                known.put(fresh[key])
            elif old is None:
                if not known.add(key):
                    continue  # gone already: its removal is on its way
            else:
                known.invalidate(key)
            changed.append(key)
            if query and not matches(known[key], query):
                moved |= self._hide(key)
            elif key not in rows:
                self.add_live_row(key)
                resort = True
            elif sort_key is not None and (
                old is None or sort_key(old, now) != sort_key(known[key], now)
            ):
                resort = True
        return changed, moved, resort

    def set_query(self, text: str) -> None:
        """Show only the processes matching ``text`` (see `matches`)."""
        self.query_text = text
        for key, view in self.views.items():
            if not matches(view, text):
                self._hide(key)
            elif key not in self.rows:
                self.add_live_row(key)
        self.resort()
        self._announce()

    def set_countdown(self, key: str, seconds: int | None) -> None:
        """Show an escalation's countdown in the row's state cell (None clears it)."""
        if seconds is None:
            self.countdowns.pop(key, None)
        else:
            self.countdowns[key] = seconds
        if key in self.rows:
            self.draw_row(key, self.clock())

    # --- selection -------------------------------------------------------
    def targets(self) -> list[str]:
        """The marked processes, or else the selected one."""
        if self.marked:
            return sorted(self.marked, key=lambda k: SORT_KEYS["key"](self.views[k], 0))
        return [self.selected] if self.selected else []

    def select(self, key: str) -> bool:
        """Put the cursor on ``key``; False when it is not shown."""
        if key not in self.rows:
            return False
        self.move_cursor(row=self.get_row_index(key))
        self._announce()
        return True

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        event.stop()
        self._announce()

    # --- actions -----------------------------------------------------------
    def action_toggle_mark(self) -> None:
        key = self.selected
        if key is None:
            return
        self.marked ^= {key}
        self.draw_row(key, self.clock())
        self.action_cursor_down()

    def action_clear_marks(self) -> None:
        if not self.marked:
            if self.query_text:
                self.post_message(self.ClearFilter())
            return
        shown = self.marked & {str(k.value) for k in self.rows}
        self.marked.clear()
        for key in shown:
            self.draw_row(key, self.clock())

    def action_sort_next(self) -> None:
        shown = [c.key for c in self.columns if not c.hidden] or list(self.shown_columns)
        i = shown.index(self.sort_column) if self.sort_column in shown else -1
        self.sort_column, self.sort_reverse = shown[(i + 1) % len(shown)], False
        self.resort()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.resort()

    # --- internals ---------------------------------------------------------
    def _hide(self, key: str) -> bool:
        """Drop ``key``'s row; True if it was shown."""
        shown = key in self.rows
        self.drop_live_row(key)
        return shown

    def sort_key(self, column: str) -> Callable[[str], Any] | None:
        by, views, now = SORT_KEYS.get(column), self.views, self.clock()
        return None if by is None else lambda key: by(views[key], now)

    def _announce(self) -> None:
        """Tell the app when the selected process changes (not on every repaint)."""
        key = self.selected
        if key != self._shown_key:
            self._shown_key = key
            self.post_message(self.Selected(key))

    def now(self) -> float:
        return self.clock()

    def row_cells(self, key: str, now: float) -> tuple[Text | str, ...]:
        return self._cells(self.views[key], now)

    def _key_cell(self, key: str) -> Text:
        if key in self.marked:
            return Text.assemble(("✓ ", "bold green"), (key, "bold"))
        return Text("  " + key)

    def _cells(self, view: ProcView, now: float) -> tuple[Text | str, ...]:
        cells = [make(view, now) for make in self._cell_makers]
        if view.key in self.marked and "key" not in self.shown_columns and cells:
            cells[0] = Text.assemble(("✓ ", "bold green"), cells[0])  # the mark shows anyway
        return tuple(cells)

    def _makers(self) -> dict[str, Callable[[ProcView, float], Text]]:
        """Each column's cell of a process (Text, not str: never read as markup)."""
        return {
            "key": lambda v, now: self._key_cell(v.key),
            "node": lambda v, now: Text(v.node),
            "pid": lambda v, now: fmt.right(str(v.pid)),
            "app": lambda v, now: Text(v.app),
            "command": lambda v, now: Text(v.command),
            "state": lambda v, now: fmt.proc_state(v, self.countdowns.get(v.key)),
            "reason": lambda v, now: fmt.reason(v),
            "cpu": lambda v, now: fmt.right(f"{v.cpu_time:.1f}"),
            "cpu%": lambda v, now: fmt.right(cpu_text(v)),
            "rss": lambda v, now: fmt.right(fmt.human_bytes(v.rss) if v.alive else "-"),
            # max RSS 0: never sampled
            "max_rss": lambda v, now: fmt.right(fmt.human_bytes(v.max_rss) if v.max_rss else "-"),
            "start": lambda v, now: Text(fmt.clock_time(v.started_at, now)),
            "run": lambda v, now: fmt.right(fmt.duration(v.run_time(now))),
        }
