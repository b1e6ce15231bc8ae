"""The nodes pane: one row per worker, updated a row at a time.

Like the processes pane it is a `LiveTable`: a thousand nodes beating every
second redraw only the rows on screen; the others catch up as they scroll in.
A beat that moves only a node's figures is drawn with the others of the
same `FLUSH`; a new node or a new state (suspect, lost) is drawn at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.message import Message

from corral.master.model import NodeView
from corral.tui import format as fmt
from corral.tui.widgets.live_table import LiveTable

FLUSH = 0.25  # seconds: figures of beating nodes are redrawn at most this often

# (key, label, layout): widths come from the content (see `LiveTable.add_column`).
COLUMNS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("state", "State", {}),
    ("name", "Node", {"shrink": 2, "min_width": 8}),
    ("address", "Address", {"shrink": 3, "min_width": 9}),
    ("beat", "Beat", {}),
    ("cpu", "CPU (last minute)", {}),
    ("mem", "Memory", {"drop": 1}),
    ("jobs", "Jobs mem", {"drop": 2}),  # held by job replicas / offered to jobs
    ("procs", "Procs", {}),
)


def jobs_mem_cell(held: int, offer: int) -> Text:
    """``200M/250M``: memory job replicas hold on a node, of what it offers to jobs."""
    if not offer:
        return Text("-", justify="right")
    return Text(f"{fmt.human_bytes(held)}/{fmt.human_bytes(offer)}", justify="right")


class NodesTable(LiveTable):
    """Nodes with state (colour and symbol), beat age, CPU sparkline, memory."""

    BINDINGS = [
        Binding("enter", "open_node", "Detail", tooltip="The node's facts, graphs and processes"),
        Binding(
            "f",
            "filter_node",
            "Its processes",
            tooltip="Show only this node's processes",
            id="node_filter",
        ),
        Binding("escape", "clear_filter", "All", show=False, tooltip="Show every node's processes"),
    ]

    class OpenNode(Message):
        """The operator wants ``node`` in detail."""

        def __init__(self, node: str) -> None:
            super().__init__()
            self.node = node

    class FilterNode(Message):
        """The operator wants the processes of ``node`` ("": of every node)."""

        def __init__(self, node: str) -> None:
            super().__init__()
            self.node = node

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.views: dict[str, NodeView] = {}
        self.held: Callable[[str], int] = lambda name: 0  # bytes jobs hold on a node
        self.sort_column = "name"
        self._pending: set[str] = set()  # rows whose figures moved, for the next flush
        self._flush_due = False

    def on_mount(self) -> None:
        for key, label, layout in COLUMNS:
            self.add_column(label, key=key, overflow="ellipsis", **layout)
        # Out of phase with the processes pane's ticks: they do not share a frame.
        self.start_ticking(delay=0.5)

    def update_nodes(self, views: Iterable[NodeView]) -> None:
        """Add or update the given rows; only rows on screen are redrawn."""
        now, added, urgent = self.clock(), False, []
        for view in views:
            old = self.views.get(view.name)
            if old is None:
                self.add_live_row(view.name)
                added = True
            self.views[view.name] = view
            if old is None or old.state != view.state:
                urgent.append(view.name)
            else:
                self._pending.add(view.name)
        if added:
            self.resort(keep_cursor=False)  # as nodes join, the cursor stays on the top row
        elif urgent:
            self.draw_changed(urgent, now)
        if self._pending and not self._flush_due:
            # Each beat on its own would cost a frame: ten a second for
            # a hundred nodes, where a few carry the same news.
            self._flush_due = True
            self.set_timer(FLUSH, self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        keys, self._pending = self._pending, set()
        self.draw_changed(keys, self.clock())

    def now(self) -> float:
        return self.clock()

    def row_cells(self, key: str, now: float) -> tuple[Text | str, ...]:
        return self._cells(self.views[key], now, self.held(key))

    def sort_key(self, column: str) -> Callable[[str], str] | None:
        return (lambda key: self.views[key].name) if column == "name" else None

    def action_open_node(self) -> None:
        if self.selected:
            self.post_message(self.OpenNode(self.selected))

    def action_filter_node(self) -> None:
        if self.selected:
            self.post_message(self.FilterNode(self.selected))

    def action_clear_filter(self) -> None:
        self.post_message(self.FilterNode(""))

    def jobs_changed(self, names: Iterable[str]) -> None:
        """Jobs took or gave back memory on ``names``: their rows follow."""
        self.draw_changed([n for n in names if n in self.views], self.clock())

    @staticmethod
    def _cells(view: NodeView, now: float, held: int = 0) -> tuple[Text | str, ...]:
        return (
            fmt.node_state(view),
            fmt.node_name(view),
            Text(view.address),
            fmt.beat_age(view, now),
            fmt.cpu_cell(view),
            fmt.mem_cell(view),
            jobs_mem_cell(held, view.mem_offer),
            fmt.right(str(view.procs_running)),
        )
