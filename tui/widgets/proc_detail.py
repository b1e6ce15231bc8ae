"""Process detail (Enter or ``i`` on a process): what it is, how it went, how it ended.

Its command and app, its states with the time each began (the master keeps
them: `Cluster.proc_states`), live CPU % and RSS graphs (`Cluster.proc_trend`),
and, once it ended, its death certificate (`Cluster.certificate`): the
reason, run time, CPU user and system time, peak RSS and the last lines of
its log, which the master fetched when it ended and keeps after the
process and its worker are gone.  Esc goes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from corral.master.model import (
    TAIL_LINES,
    TREND_BUCKET,
    TREND_SPAN,
    Certificate,
    Change,
    Cluster,
    ProcView,
)
from corral.master.text import cpu_seconds
from corral.tui import format as fmt
from corral.tui.widgets.graph import Graph

REFRESH = 0.25  # at most one redraw per this many seconds
SPAN = int(TREND_SPAN / TREND_BUCKET)  # the graphs' points across the full width


def percent(v: float) -> str:
    return f"{v:.0f}%"


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def facts_table(view: ProcView, now: float) -> Table:
    live = view.alive
    grid = Table.grid(padding=(0, 2))
    for _ in range(4):
        grid.add_column()
    pairs: list[tuple[str, Text | str]] = [
        ("process", Text(view.key, style="bold")),
        ("state", fmt.proc_state(view)),
        ("app", view.app),
        ("launch", view.launch),
        ("started", _stamp(view.started_at)),
        ("run time", fmt.duration(view.run_time(now))),
        ("CPU", cpu_seconds(view.cpu_time) + (f" ({view.cpu_percent:.0f}% now)" if live else "")),
        (
            "RSS",
            f"{fmt.human_bytes(view.rss) if live else '-'} (peak {fmt.human_bytes(view.max_rss)})",
        ),
    ]
    for i in range(0, len(pairs), 2):
        row: list[Text | str] = []
        for key, value in pairs[i : i + 2]:
            row += [Text(key, style="dim"), value]
        grid.add_row(*row)
    command = Text("command  ", style="dim")
    command.append(view.command)
    out = Table.grid()
    out.add_column()
    out.add_row(grid)
    out.add_row(command)
    return out


def states_table(states: list[tuple[float, str]] | tuple[tuple[float, str], ...]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_column(style="dim")
    for i, (ts, state) in enumerate(states):
        nxt = states[i + 1][0] if i + 1 < len(states) else None
        lasted = f"for {fmt.duration(nxt - ts)}" if nxt is not None else ""
        grid.add_row(_stamp(ts), Text(state, style=fmt.PROC_STYLES.get(state, "")), lasted)
    return grid


def certificate(cert: Certificate) -> RenderableType:
    """The death certificate: how it ended, what it cost, its last log lines."""
    p = cert.proc
    end = p.ended_at if p.ended_at is not None else p.started_at
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("reason", fmt.reason(p))
    grid.add_row("ended", _stamp(end))
    grid.add_row("run time", fmt.duration(end - p.started_at))
    grid.add_row("CPU", f"{cpu_seconds(p.cpu_user)} user, {cpu_seconds(p.cpu_sys)} system")
    grid.add_row("max RSS", fmt.human_bytes(p.max_rss))
    if cert.log_tail is None:
        tail: RenderableType = Text(
            cert.log_error or "fetching the last log lines…", style="dim italic"
        )
    elif cert.log_error:
        tail = Text(f"log not available: {cert.log_error}", style="yellow")
    elif not cert.log_tail:
        tail = Text("(the log is empty)", style="dim")
    else:
        tail = Text("\n".join(cert.log_tail), no_wrap=True, overflow="ellipsis")
    head = Text(f"last {TAIL_LINES} log lines", style="bold")
    return Group(grid, Text(""), head, tail)


class ProcDetail(Screen[None]):
    """One process, live, then its certificate; esc goes back."""

    BINDINGS = [Binding("escape,q", "back", "Back", tooltip="Back to the previous screen")]

    def __init__(self, cluster: Cluster, key: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.cluster = cluster
        self.key = key
        self.clock = clock
        self.last: ProcView | None = None  # kept when the master forgets the process
        self._cert: Certificate | None = None
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="proc-detail", classes="detail"):
            yield Static(id="proc-facts", classes="detail-facts")
            yield Graph("CPU", percent, top=100.0, id="proc-cpu", classes="detail-graph", span=SPAN)
            yield Graph("RSS", fmt.human_bytes, id="proc-rss", classes="detail-graph", span=SPAN)
            yield Static(id="proc-states", classes="detail-section")
            yield Static(id="proc-cert", classes="detail-section")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#proc-detail").border_title = f"Process {self.key}"
        self.query_one(
            "#proc-detail"
        ).border_subtitle = f"graphs: last 10 minutes, a point per {TREND_BUCKET:g}s"
        self.query_one("#proc-states").border_title = "States"
        self.query_one("#proc-cert").border_title = "Death certificate"
        self._unsubscribe = self.cluster.subscribe(self._on_change)
        self.set_interval(1.0, self.refresh_view)  # the run time, graphs' newest point
        self.refresh_view()
        self.query_one("#proc-detail").focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_change(self, change: Change) -> None:
        mine = self.key in change.procs or self.key in change.removed_procs
        if mine and not self._scheduled:
            self._scheduled = True
            self.set_timer(REFRESH, self.refresh_view)

    def refresh_view(self) -> None:
        self._scheduled = False
        view = self.cluster.proc(self.key)
        if view is None or (self.last is not None and view.launch != self.last.launch):
            self._gone()
            return
        self.last = view
        now = self.clock()
        self.query_one("#proc-facts", Static).update(facts_table(view, now))
        trend = self.cluster.proc_trend(self.key, now)
        cpu = trend.get("cpu", [])
        self.query_one("#proc-cpu", Graph).show(cpu, top=max([100.0, *cpu]))
        rss = trend.get("rss", [])
        self.query_one("#proc-rss", Graph).show(rss, top=max([float(view.max_rss), *rss]))
        states = states_table(self.cluster.proc_states(self.key))
        self.query_one("#proc-states", Static).update(states)
        cert = self.cluster.certificate(self.key)
        if cert is not None:
            self._cert = cert
        box = self.query_one("#proc-cert", Static)
        box.display = self._cert is not None
        if self._cert is not None:
            box.update(certificate(self._cert))

    def _gone(self) -> None:
        """The master forgot the process (history rule, rm --logs): keep what was shown."""
        self.query_one("#proc-detail").border_subtitle = "no longer kept by the master"

    def action_back(self) -> None:
        self.dismiss()
