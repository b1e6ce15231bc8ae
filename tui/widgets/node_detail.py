"""Node detail (Enter on a node): its facts, ten minutes of graphs, its processes.

Graphs come from the master's bounded history (`Cluster.node_trend`: one
point per `TREND_BUCKET` seconds, the last `TREND_SPAN`), drawn at the full
width.  The screen follows the cluster: a change to the node or one of its
processes is drawn within `REFRESH`; the heartbeat age ticks each second.
Enter on a process opens its detail; esc goes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from corral.master.model import TREND_BUCKET, TREND_SPAN, Change, Cluster, NodeView, ProcView
from corral.tui import format as fmt
from corral.tui.widgets.graph import Graph

REFRESH = 0.25  # at most one redraw per this many seconds
SPAN = int(TREND_SPAN / TREND_BUCKET)  # the graphs' points across the full width


def percent(v: float) -> str:
    return f"{v:.0f}%"


def load(v: float) -> str:
    return f"{v:.2f}"


def count(v: float) -> str:
    return f"{v:.0f}"


def facts_table(view: NodeView, now: float) -> Table:
    """The node's facts: short ones in two key/value columns, long ones on their own line."""
    grid = Table.grid(padding=(0, 2))
    for _ in range(4):
        grid.add_column(no_wrap=True)
    mem = f"{fmt.human_bytes(view.mem_used)} of {fmt.human_bytes(view.mem_total)}"
    pairs: list[tuple[str, Text | str]] = [
        ("state", fmt.node_state(view)),
        ("heartbeat", fmt.beat_age(view, now)),
        ("hostname", view.hostname or "-"),
        ("address", view.address or "-"),
        ("cores", str(view.cpus)),
        ("memory", mem),
        ("CPU", f"{view.cpu_percent:.0f}%"),
        ("load", f"{view.load1:.2f}"),
        ("processes", f"{view.procs_running} running of {view.procs_total} known"),
        ("worker", f"{view.version or '?'} (pid {view.worker_pid or '?'})"),
        ("ssh", f"{view.ssh_host or '-'}:{view.ssh_port}"),
        ("kernel", view.kernel or "-"),
    ]
    for i in range(0, len(pairs), 2):
        row: list[Text | str] = []
        for key, value in pairs[i : i + 2]:
            row += [Text(key, style="dim"), value]
        grid.add_row(*row)
    long = Table.grid(padding=(0, 2))
    long.add_column(no_wrap=True, min_width=max(len(key) for key, _ in pairs[::2]))
    long.add_column(overflow="fold")
    long.add_row(Text("boot id", style="dim"), view.boot_id or "-")
    long.add_row(Text("root", style="dim"), view.root or "-")
    out = Table.grid()
    out.add_column()
    out.add_row(grid)
    out.add_row(long)
    return out


def proc_cells(view: ProcView, now: float) -> tuple[Text | str, ...]:
    end = view.ended_at if view.ended_at is not None else now
    return (
        Text(str(view.pid), justify="right"),
        fmt.proc_state(view),
        Text(f"{view.cpu_percent:.0f}%" if view.alive else "-", justify="right"),
        Text(fmt.human_bytes(view.rss) if view.alive else "-", justify="right"),
        Text(fmt.duration(end - view.started_at), justify="right"),
        view.app,
        view.command,
    )


class NodeDetail(Screen[None]):
    """One node, live; esc goes back."""

    BINDINGS = [
        Binding("escape,q", "back", "Back", tooltip="Back to the dashboard"),
    ]

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        clock: Callable[[], float] = time.time,
        open_proc: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.cluster = cluster
        self.node_name = name
        self.clock = clock
        self.open_proc = open_proc
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._cells: dict[str, tuple[Text | str, ...]] = {}  # the table's rows as drawn

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="node-detail", classes="detail"):
            yield Static(id="node-facts", classes="detail-facts")
            yield Graph("CPU", percent, top=100.0, id="node-cpu", classes="detail-graph", span=SPAN)
            yield Graph("Memory", fmt.human_bytes, id="node-mem", classes="detail-graph", span=SPAN)
            yield Graph("Load", load, id="node-load", classes="detail-graph", span=SPAN)
            yield Graph("Processes", count, id="node-procs", classes="detail-graph", span=SPAN)
            yield DataTable(id="node-proc-table", cursor_type="row", zebra_stripes=False)
        yield Footer()

    def on_mount(self) -> None:
        pane = self.query_one("#node-detail")
        pane.border_title = f"Node {self.node_name}"
        pane.border_subtitle = f"last 10 minutes, a point per {TREND_BUCKET:g}s"
        table = self.query_one(DataTable)
        for label in ("PID", "State", "CPU%", "RSS", "Time", "App", "Command"):
            table.add_column(label, key=label.lower())
        self._unsubscribe = self.cluster.subscribe(self._on_change)
        self.set_interval(1.0, self.refresh_view)  # the heartbeat age, graphs' newest point
        self.refresh_view()
        table.focus(scroll_visible=False)  # the facts stay in view at 80x24

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_change(self, change: Change) -> None:
        name = self.node_name
        prefix = name + ":"
        mine = name in change.nodes or any(
            k.startswith(prefix) for k in (*change.procs, *change.removed_procs)
        )
        if mine and not self._scheduled:
            self._scheduled = True
            self.set_timer(REFRESH, self.refresh_view)

    def refresh_view(self) -> None:
        self._scheduled = False
        if not self.cluster.has_node(self.node_name):
            return
        now = self.clock()
        view = self.cluster.node(self.node_name)
        self.query_one("#node-facts", Static).update(facts_table(view, now))
        trend = self.cluster.node_trend(self.node_name, now)
        self.query_one("#node-cpu", Graph).show(trend.get("cpu", []))
        self.query_one("#node-mem", Graph).show(trend.get("mem", []), top=float(view.mem_total))
        loads = trend.get("load", [])
        self.query_one("#node-load", Graph).show(loads, top=max([float(view.cpus), *loads]))
        self.query_one("#node-procs", Graph).show(trend.get("procs", []))
        self._fill_procs(now)

    def _fill_procs(self, now: float) -> None:
        """The node's processes, live first, newest first; only changed cells are redrawn."""
        table = self.query_one(DataTable)
        procs = sorted(
            self.cluster.procs(self.node_name), key=lambda p: (not p.alive, -p.started_at)
        )
        rows = {p.key: proc_cells(p, now) for p in procs}
        if list(rows) != list(self._cells):
            cursor = table.cursor_row
            table.clear()
            for key, cells in rows.items():
                table.add_row(*cells, key=key)
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))
        else:
            columns = [c.key for c in table.ordered_columns]
            for key, cells in rows.items():
                old = self._cells[key]
                for col, cell, was in zip(columns, cells, old, strict=True):
                    if cell != was:
                        table.update_cell(key, col, cell)
        self._cells = rows

    @on(DataTable.RowSelected, "#node-proc-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        if self.open_proc is not None and event.row_key.value is not None:
            self.open_proc(event.row_key.value)

    def action_back(self) -> None:
        self.dismiss()
