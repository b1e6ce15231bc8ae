"""The jobs view (``j`` or ``:jobs``) and a job's ticket (Enter on a job).

The view lists the master's jobs (`master.jobs.Jobs`): open ones first,
oldest first, then the ended ones, dimmed.  Its columns say what
``corral jobs`` says (`master.job_report.job_row`): id, name, state,
replicas running of those asked for, memory, queue position, age and the
reason a job waits or failed.  It follows `Jobs.subscribe`: the ids that
moved are collected and redrawn at most once per `REFRESH`; ages tick with
the table's clock.  Rows are drawn only when on screen, from the live
`Job` records, so ten thousand queued jobs cost what a screenful does.

Keys: Enter opens the ticket, ``n`` submits (`SubmitDialog`), ``c`` cancels
after a confirmation, ``f`` fetches (`FetchDialog`), ``a`` shows or hides
the ended jobs, Escape or ``j`` goes back.  In the ticket, Enter or ``l`` on
a replica shows its log in the dashboard's log pane.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Static

from corral.master.control import Master, VerbError
from corral.master.fetch import FetchProgress, FetchResult, fetch
from corral.master.job_report import (
    REPLICA_HEADERS,
    job_row,
    replica_row,
    steps_text,
    ticket_lines,
)
from corral.master.jobs import Jobs
from corral.master.tickets import Job
from corral.transport.messages import ALIVE_STATES
from corral.tui.widgets.confirm import ConfirmDialog
from corral.tui.widgets.fetch import FetchDialog
from corral.tui.widgets.footer import KeyFooter
from corral.tui.widgets.live_table import LiveTable
from corral.tui.widgets.submit import SubmitDialog

REFRESH = 0.1  # at most one redraw of the jobs that moved per this many seconds
STATE_STYLES = {
    "queued": "yellow",
    "running": "green",
    "succeeded": "cyan",
    "failed": "bold red",
    "cancelled": "magenta",
}
RIGHT = {"id", "replicas", "pos", "age"}

# (key, label, layout), in `job_row`'s order; widths come from the content.
COLUMNS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("id", "ID", {}),
    ("name", "Name", {"shrink": 2, "min_width": 6}),
    ("state", "State", {}),
    ("replicas", "Run", {}),
    ("mem", "Memory", {"drop": 2}),
    ("pos", "Pos", {}),
    ("age", "Age", {"drop": 1}),
    ("reason", "Reason", {"grow": 1, "shrink": 1, "min_width": 12}),
)
FOOTER_KEYS = ("submit", "cancel_job", "fetch", "toggle_ended", "back")

ShowLog = Callable[[str], object]  # the dashboard: show NODE:PID's log in its pane
SshConfigSource = Callable[[], Any]  # the deployer's ssh_config (VerbError if unusable)


def job_cells(ticket: Mapping[str, Any], now: float, ended: bool) -> tuple[Text, ...]:
    """One job's row: `job_row`'s words, the state in its colour, ended ones dimmed."""
    out = []
    for (key, _, _), value in zip(COLUMNS, job_row(ticket, now), strict=True):
        style = STATE_STYLES.get(str(value), "") if key == "state" else ""
        text = Text(str(value), style=style, justify="right" if key in RIGHT else None)
        if ended:
            text.stylize("dim")
        out.append(text)
    return tuple(out)


class JobsTable(LiveTable):
    """A row per job; cells come from the live `Job` records, asked for when on screen."""

    def __init__(self, jobs: Jobs, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = jobs
        self.clock = clock
        self.jobs: dict[str, Job] = {}  # row key (the id) -> its record
        self.positions: dict[int, int] = {}  # the queue's, as of the last refresh
        self._tickets: dict[str, dict[str, Any]] = {}  # tickets of rows drawn, until they move
        self.sort_column = "id"

    def on_mount(self) -> None:
        for key, label, layout in COLUMNS:
            self.add_column(label, key=key, overflow="ellipsis", **layout)
        self.start_ticking()  # ages

    def now(self) -> float:
        return self.clock()

    def ticket(self, key: str) -> dict[str, Any]:
        found = self._tickets.get(key)
        if found is None:
            job = self.jobs[key]
            found = self.source.ticket(job, self.positions.get(job.id, 0))
            self._tickets[key] = found
        return found

    def row_cells(self, key: str, now: float) -> tuple[Text, ...]:
        return job_cells(self.ticket(key), now, self.jobs[key].ended)

    def sort_key(self, column: str) -> Callable[[str], Any] | None:
        if column == "id":  # open jobs first, then the ended ones; each oldest first
            return lambda key: (self.jobs[key].ended, self.jobs[key].id)
        return None

    def update_jobs(self, jobs: Iterable[Job], gone: Iterable[int] = ()) -> None:
        """Rows for ``jobs`` (new or moved), and none for ``gone``; rows on screen redrawn."""
        moved, reorder = [], False
        for job in jobs:
            key = str(job.id)
            old = self.jobs.get(key)
            self.jobs[key] = job
            self._tickets.pop(key, None)
            if old is None:
                self.add_live_row(key)
                reorder = True
            else:
                reorder |= old.ended != job.ended
                moved.append(key)
        for job_id in gone:
            key = str(job_id)
            if self.jobs.pop(key, None) is not None:
                self._tickets.pop(key, None)
                self.drop_live_row(key)
        if reorder:
            self.resort()
        self.draw_changed(moved, self.clock())

    @property
    def selected_job(self) -> Job | None:
        key = self.selected
        return self.jobs.get(key) if key is not None else None


def counts_text(jobs: Iterable[Job]) -> str:
    """``2 queued, 3 running, 5 ended``: the view's subtitle."""
    tally: dict[str, int] = {}
    for job in jobs:
        word = "ended" if job.ended else job.state
        tally[word] = tally.get(word, 0) + 1
    order = ("queued", "running", "cancelled", "ended")
    return ", ".join(f"{tally[w]} {w}" for w in order if tally.get(w))


# --- actions shared by the view and the ticket ----------------------------------------------
def cancel_job(screen: Screen[Any], jobs: Jobs, job: Job) -> None:
    """``c``: ask, then cancel ``job``; an ended job is only told about."""
    if job.ended or job.cancelled:
        why = "has already ended" if job.ended else "is already cancelled"
        screen.notify(
            f"job {job.id} {why} ({job.state}): it cannot be cancelled", severity="warning"
        )
        return
    live = [r.target for r in job.replicas if r.target and r.state in ALIVE_STATES]
    queued = job.state == "queued"
    if queued:
        title = f"Cancel job {job.id} ({job.name})? It leaves the queue and never runs."
        lines = [f"  {' '.join(job.argv)}"]
    else:
        n = len(live)
        title = (
            f"Cancel job {job.id} ({job.name})? SIGINT to its {n} running "
            f"replica{'s' if n != 1 else ''}."
        )
        lines = [f"  {t}" for t in live] or [f"  {' '.join(job.argv)}"]

    def done(ok: bool | None) -> None:
        if ok:
            _cancel(screen, jobs, job.id, queued, live)

    screen.app.push_screen(CancelDialog(title, lines, "Cancel job"), done)


def _cancel(screen: Screen[Any], jobs: Jobs, job_id: int, queued: bool, live: list[str]) -> None:
    async def run() -> None:
        try:
            (job,) = await jobs.cancel([job_id])
        except Exception as e:  # VerbError and any other: one line
            text = str(e) if isinstance(e, VerbError) else f"{type(e).__name__}: {e}"
            screen.notify(text, severity="error")
            return
        if queued:
            screen.notify(f"job {job.id} cancelled: it left the queue and never ran")
        else:
            to = ", ".join(live) or "its replicas as they start"
            screen.notify(f"job {job.id} cancelled: SIGINT sent to {to}")

    screen.run_worker(run(), group="cancel-job", exit_on_error=False)


def fetch_job(
    screen: Screen[Any],
    master: Master,
    ssh_config: SshConfigSource,
    job: Job,
    memory: dict[str, str],
) -> None:
    """``f``: a dialog asks where (the current directory first), then fetches with progress."""
    if not any(r.node and r.launch for r in job.replicas):
        screen.notify(
            f"job {job.id} has no replica that started: nothing to fetch", severity="warning"
        )
        return

    async def run(to: str, progress: FetchProgress) -> FetchResult:
        return await fetch(master, ssh_config(), job.id, to, progress)

    where = memory.get("fetch.to") or os.getcwd()
    nodes = [r.node for r in job.replicas if r.node and r.launch]
    screen.app.push_screen(FetchDialog(job.id, job.name, run, where, memory, nodes))


class CancelDialog(ConfirmDialog):
    """The confirmation for ``c``: its words are about a job, not a signal."""

    BINDINGS = [
        Binding("y", "confirm", "Yes", tooltip="Confirm: cancel the job"),
        Binding("n,escape", "cancel", "No", tooltip="Keep the job"),
    ]

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#cancel", Button).label = "Keep it"


# --- the jobs view -----------------------------------------------------------------------------
class JobsScreen(Screen[None]):
    """Every job, live; Escape or ``j`` goes back to the dashboard."""

    BINDINGS = [
        Binding("escape,j,q", "back", "Back", tooltip="Back to the dashboard"),
        Binding(
            "enter",
            "ticket",
            "Ticket",
            show=False,
            tooltip="The selected job's ticket: its replicas and their logs",
        ),
        Binding("n", "submit", "Submit", tooltip="Submit a job (its placement is previewed first)"),
        Binding("c", "cancel_job", "Cancel", tooltip="Cancel the selected job (asks first)"),
        Binding("f", "fetch", "Fetch", tooltip="Fetch the selected job's logs and outputs"),
        Binding("a", "toggle_ended", "Ended", tooltip="Show or hide the jobs that ended"),
    ]

    def __init__(
        self,
        master: Master,
        ssh_config: SshConfigSource,
        show_log: ShowLog,
        clock: Callable[[], float] = time.time,
        show_ended: bool = True,
        memory: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.master = master
        self.jobs = master.jobs
        self.ssh_config = ssh_config
        self.show_log = show_log
        self.clock = clock
        self.show_ended = show_ended
        self.memory = memory if memory is not None else {}
        self._dirty: set[int] = set()
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="jobs-pane"):
            yield JobsTable(self.jobs, clock=self.clock, id="jobs")
            yield Static("", id="jobs-empty")
        yield KeyFooter(FOOTER_KEYS)

    def on_mount(self) -> None:
        self.query_one("#jobs-pane").border_title = "Jobs"
        self._unsubscribe = self.jobs.subscribe(self._on_jobs)
        self._fill()
        self.table.focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    @property
    def table(self) -> JobsTable:
        return self.query_one(JobsTable)

    def _fill(self) -> None:
        table = self.table
        table.positions = self.jobs.positions()
        table.update_jobs(self.jobs.jobs(ended=self.show_ended))
        table.move_cursor(row=0)
        self._subtitle()

    def _subtitle(self) -> None:
        table = self.table
        counts = counts_text(table.jobs.values())
        hidden = "" if self.show_ended else "  (ended hidden: a shows them)"
        self.query_one("#jobs-pane").border_subtitle = counts + hidden
        empty = self.query_one("#jobs-empty", Static)
        empty.display = not table.jobs
        if self.show_ended:
            empty.update("No jobs yet. n submits one: N replicas of a program, placed by memory.")
        else:
            empty.update("No job queued or running. a shows the ended ones; n submits a new one.")

    def _on_jobs(self, ids: frozenset[int]) -> None:
        """`Jobs` listener: remember which moved; redraw at most once per REFRESH."""
        self._dirty |= ids
        if not self._scheduled:
            self._scheduled = True
            self.set_timer(REFRESH, self.refresh_jobs)

    def refresh_jobs(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        table, jobs = self.table, self.jobs
        moved: list[Job] = []
        gone: list[int] = []
        for job_id in dirty:
            job = jobs.open.get(job_id)
            if job is None:  # it ended (or is new and ended at once): the store has it
                try:
                    job = jobs.get(job_id)
                except VerbError:
                    gone.append(job_id)
                    continue
            if job.ended and not self.show_ended:
                gone.append(job_id)
            else:
                moved.append(job)
        table.positions = jobs.positions()
        with self.app.batch_update():
            table.update_jobs(moved, gone)
            self._subtitle()

    # --- keys ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_ended(self) -> None:
        self.show_ended = not self.show_ended
        table = self.table
        if self.show_ended:
            table.update_jobs(self.jobs.jobs(ended=True))
        else:
            table.update_jobs((), [j.id for j in list(table.jobs.values()) if j.ended])
        self._subtitle()

    def action_submit(self) -> None:
        def submitted(job: Job | None) -> None:
            if job is not None:
                self.refresh_jobs()  # its row now, before the next tick
                table = self.table
                if str(job.id) in table.rows:
                    table.move_cursor(row=table.get_row_index(str(job.id)))

        self.app.push_screen(SubmitDialog(self.jobs, self.memory), submitted)

    def action_cancel_job(self) -> None:
        job = self.table.selected_job
        if job is None:
            self.notify("no job selected", severity="warning")
            return
        cancel_job(self, self.jobs, job)

    def action_fetch(self) -> None:
        job = self.table.selected_job
        if job is None:
            self.notify("no job selected", severity="warning")
            return
        fetch_job(self, self.master, self.ssh_config, job, self.memory)

    def action_ticket(self) -> None:
        job = self.table.selected_job
        if job is not None:
            self.open_ticket(job.id)

    @on(LiveTable.RowSelected, "#jobs")
    def _open_ticket(self, event: LiveTable.RowSelected) -> None:
        job = self.table.jobs.get(event.row_key)
        if job is not None:
            self.open_ticket(job.id)

    def open_ticket(self, job_id: int) -> None:
        ticket = TicketScreen(
            self.master, self.ssh_config, job_id, self.show_log, self.clock, self.memory
        )
        self.app.push_screen(ticket)


# --- a job's ticket ----------------------------------------------------------------------------
def facts_text(ticket: Mapping[str, Any], now: float) -> Text:
    """The ticket's lines above its replicas (`ticket_lines`), the state in its colour."""
    lines = ticket_lines(ticket, now)
    head = lines[: lines.index("")] if "" in lines else lines
    text = Text("\n".join(head))
    state = str(ticket.get("state", ""))
    start = head[0].find(f": {state}") + 2 if head else -1
    if start >= 2:
        text.stylize(STATE_STYLES.get(state, ""), start, start + len(state))
    text.stylize("bold", 0, len(head[0]) if head else 0)
    return text


def replica_headers(steps: bool) -> tuple[str, ...]:
    """The ticket's replica columns; with a bundle, STEPS (sending 34%, unpacking...) too."""
    if not steps:
        return REPLICA_HEADERS
    return (*REPLICA_HEADERS[:-1], "STEPS", REPLICA_HEADERS[-1])


def replica_cells(row: Mapping[str, Any], now: float, steps: bool = False) -> tuple[Text, ...]:
    cells: tuple[object, ...] = replica_row(row, now)
    if steps:
        cells = (*cells[:-1], steps_text(row, now), cells[-1])
    out = []
    for label, value in zip(replica_headers(steps), cells, strict=True):
        justify = "right" if label in ("#", "CPU", "MAX RSS", "TIME") else None
        style = ""
        if label == "STATE":
            state = str(value)
            style = {"running": "green", "sleeping": "green", "lost": "bold red"}.get(state, "")
            if state in ("killed", "failed", "unknown") or (
                state == "exited" and row.get("exit_code") not in (0, None)
            ):
                style = "red"
        out.append(Text(str(value), style=style, justify=justify))  # type: ignore[arg-type]
    return tuple(out)


class TicketScreen(Screen[None]):
    """One job's ticket, live: the job, then its replicas; Escape goes back."""

    BINDINGS = [
        Binding("escape,q", "back", "Back", tooltip="Back to the jobs"),
        Binding("l", "log", "Log", tooltip="The selected replica's log in the log pane (or Enter)"),
        Binding("c", "cancel_job", "Cancel", tooltip="Cancel the job (asks first)"),
        Binding("f", "fetch", "Fetch", tooltip="Fetch the job's logs and outputs"),
    ]

    def __init__(
        self,
        master: Master,
        ssh_config: SshConfigSource,
        job_id: int,
        show_log: ShowLog,
        clock: Callable[[], float] = time.time,
        memory: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.master = master
        self.jobs = master.jobs
        self.ssh_config = ssh_config
        self.job_id = job_id
        self.show_log = show_log
        self.clock = clock
        self.memory = memory if memory is not None else {}
        self.job: Job | None = None
        self.ticket: dict[str, Any] = {}
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self.steps = False  # the job has a bundle: a STEPS column

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="job-ticket", classes="detail"):
            yield Static(id="ticket-facts", classes="detail-facts")
            yield DataTable(id="ticket-replicas", cursor_type="row", zebra_stripes=False)
        yield KeyFooter(("log", "cancel_job", "fetch", "back"))

    def on_mount(self) -> None:
        pane = self.query_one("#job-ticket")
        pane.border_title = f"Job {self.job_id}"
        table = self.query_one(DataTable)
        try:
            self.steps = bool(self.jobs.get(self.job_id).bundle)
        except VerbError:
            self.steps = False
        for label in replica_headers(self.steps):
            table.add_column(label, key=label)
        self._unsubscribe = self.jobs.subscribe(self._on_jobs)
        self.set_interval(1.0, self._tick)  # run times, live CPU and RSS
        self.refresh_view()
        table.focus(scroll_visible=False)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _tick(self) -> None:
        if self.job is not None and self.job.ended:  # only its "ago"s move now
            self.query_one("#ticket-facts", Static).update(facts_text(self.ticket, self.clock()))
        else:
            self.refresh_view()

    def _on_jobs(self, ids: frozenset[int]) -> None:
        if self.job_id in ids and not self._scheduled:
            self._scheduled = True
            self.set_timer(REFRESH, self.refresh_view)

    def refresh_view(self) -> None:
        self._scheduled = False
        try:
            self.job = self.jobs.get(self.job_id)
        except VerbError as e:
            self.query_one("#ticket-facts", Static).update(str(e))
            return
        self.ticket = self.jobs.ticket(self.job)
        now = self.clock()
        self.query_one("#ticket-facts", Static).update(facts_text(self.ticket, now))
        table = self.query_one(DataTable)
        for row in self.ticket.get("replicas") or []:
            key = str(row.get("index"))
            cells = replica_cells(row, now, self.steps)
            if key not in table.rows:
                table.add_row(*cells, key=key)
                continue
            for label, cell in zip(replica_headers(self.steps), cells, strict=True):
                if str(table.get_cell(key, label)) != cell.plain:
                    table.update_cell(key, label, cell)

    # --- keys ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss()

    @on(DataTable.RowSelected, "#ticket-replicas")
    def action_log(self) -> None:
        table = self.query_one(DataTable)
        rows = self.ticket.get("replicas") or []
        if not rows or table.cursor_row >= len(rows):
            return
        row = rows[table.cursor_row]
        target = row.get("target") or ""
        if not target:
            self.notify(
                f"replica {row.get('index')} has not started: no log yet", severity="warning"
            )
            return
        self.show_log(target)

    def action_cancel_job(self) -> None:
        if self.job is not None:
            cancel_job(self, self.jobs, self.job)

    def action_fetch(self) -> None:
        if self.job is not None:
            fetch_job(self, self.master, self.ssh_config, self.job, self.memory)
