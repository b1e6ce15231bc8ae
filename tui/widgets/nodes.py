"""The nodes pane: one row per worker, updated a row at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from master.model import NodeView
from tui import format as fmt

COLUMNS = (
    ("state", "State", 10),
    ("name", "Node", 14),
    ("address", "Address", 21),
    ("beat", "Beat", 7),
    ("cpu", "CPU (last minute)", 20),
    ("mem", "Memory", 12),
    ("procs", "Procs", 5),
)


class NodesTable(DataTable[Text | str]):
    """Nodes with state (colour and symbol), beat age, CPU sparkline, memory."""

    BINDINGS = [
        Binding("enter", "filter_node", "Its processes", tooltip="Show only this node's processes"),
    ]

    class FilterNode(Message):
        """The operator wants the processes of ``node``."""

        def __init__(self, node: str) -> None:
            super().__init__()
            self.node = node

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.views: dict[str, NodeView] = {}

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)
        self.set_interval(1.0, self.tick)

    def update_nodes(self, views: Iterable[NodeView]) -> None:
        """Add or update the given rows; other rows are untouched."""
        now = self.clock()
        added = False
        for view in views:
            cells = self._cells(view, now)
            if view.name in self.views:
                for (key, _, _), cell in zip(COLUMNS, cells, strict=True):
                    self.update_cell(view.name, key, cell)
            else:
                self.add_row(*cells, key=view.name)
                added = True
            self.views[view.name] = view
        if added:
            self.sort("name", key=lambda cell: str(cell))

    def tick(self) -> None:
        """Heartbeat ages grow between beats (a lost node sends none)."""
        now = self.clock()
        for name, view in self.views.items():
            self.update_cell(name, "beat", fmt.beat_age(view, now))

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def action_filter_node(self) -> None:
        if self.selected:
            self.post_message(self.FilterNode(self.selected))

    @staticmethod
    def _cells(view: NodeView, now: float) -> tuple[Text | str, ...]:
        return (
            fmt.node_state(view),
            fmt.node_name(view),
            view.address,
            fmt.beat_age(view, now),
            fmt.cpu_cell(view),
            fmt.mem_cell(view),
            fmt.right(str(view.procs_running)),
        )
