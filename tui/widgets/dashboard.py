"""The main screen: header, nodes, processes, log, command line, footer.

It subscribes to the cluster and keeps the panes current: the listener only
collects what changed and schedules one refresh per `REFRESH`; the refresh
pulls snapshots of just those nodes and processes and hands them down to the
panes.  Verbs run in workers; their errors are shown once, by
`_worker_failed`.

The ``:`` command line runs the CLI's verbs (`corral.master.verbs`): the
line is parsed with the verb's own declarations, its request is checked
as the API checks it, and the verb's own `Master` call runs it; what it
prints is the CLI's text.  Some verbs then act on the screen as well
(``:launch`` selects the new process, ``:logs`` follows one in the log
pane, ``:deploy`` shows progress in the hint line).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from corral.master.control import Master, RemoveResult, VerbError
from corral.master.deployer import Deployer
from corral.master.fetch import fetch
from corral.master.job_report import submitted_line
from corral.master.model import Change
from corral.master.verbs import wire
from corral.master.verbs.base import CommandError, Output, Plane
from corral.tui.commands import Command, parse, screen_word
from corral.tui.settings import rebind
from corral.tui.tally import Tally
from corral.tui.widgets.command_line import CommandLine, CommandOutput
from corral.tui.widgets.confirm import ConfirmDialog
from corral.tui.widgets.deploy import DeployDialog, ProgressFeed, summary
from corral.tui.widgets.events import EventsPane, EventsScreen
from corral.tui.widgets.fetch import FetchDialog
from corral.tui.widgets.filter_bar import FilterBar
from corral.tui.widgets.footer import KeyFooter
from corral.tui.widgets.header import ClusterHeader
from corral.tui.widgets.help import HelpScreen
from corral.tui.widgets.jobs import JobsScreen, TicketScreen
from corral.tui.widgets.launch import LaunchDialog
from corral.tui.widgets.live_table import LiveTable
from corral.tui.widgets.log_pane import LogPane
from corral.tui.widgets.node_detail import NodeDetail
from corral.tui.widgets.node_picker import USABLE, preselected
from corral.tui.widgets.nodes import NodesTable
from corral.tui.widgets.proc_detail import ProcDetail
from corral.tui.widgets.procs import ProcsTable, filter_title
from corral.tui.widgets.remove import RemoveDialog
from corral.tui.widgets.submit import SubmitDialog

REFRESH = 0.1  # at most one repaint of changed rows per this many seconds
SIGNALS = {
    "stop": ("SIGINT", "Stop", "graceful stop"),
    "kill": ("SIGKILL", "Kill", "force kill"),
}
_NEEDS_TARGET = ("stop", "kill", "escalate")
# The footer's keys by priority: at 80 columns the last ones give way (? lists all).
FOOTER_KEYS = ("launch", "stop", "kill", "filter", "command", "help", "app.quit", "toggle_mark")


class Dashboard(Screen[None]):
    """The operator's view of the cluster, and the keys that act on it."""

    BINDINGS = [
        Binding(
            "l",
            "launch",
            "Launch",
            tooltip="Launch a program on one, some or all nodes",
            id="launch",
        ),
        Binding(
            "s",
            "stop",
            "Stop",
            tooltip="Graceful stop: SIGINT to the selected or marked",
            id="stop",
        ),
        Binding(
            "k,ctrl+k",
            "kill",
            "Kill",
            tooltip="Force kill: SIGKILL to the selected or marked",
            id="kill",
        ),
        Binding(
            "e",
            "escalate",
            "Escalate",
            tooltip="SIGINT, then SIGKILL after a countdown",
            id="escalate",
        ),
        Binding(
            "d",
            "deploy",
            "Deploy",
            tooltip="Deploy an executable and its libraries to nodes",
            id="deploy",
        ),
        Binding(
            "ctrl+d,delete",
            "remove",
            "Rm app",
            tooltip="Remove the selected process's app everywhere (asks first)",
            id="remove",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            tooltip="Filter processes by node:, app:, state: or text",
            id="filter",
        ),
        Binding(
            "colon",
            "command",
            "Cmd",
            tooltip="Command line: the corral verbs (launch, ps, ...)",
            id="command",
        ),
        Binding("question_mark", "help", "Help", tooltip="This help", id="help"),
        Binding(
            "q",
            "app.quit",
            "Quit",
            tooltip="Quit. corral master: workers and programs keep running."
            " corral demo: ends the demo, stopping its workers and programs",
            id="quit",
        ),
        # The log pane's follow and merged view, from any pane (see "log pane" below).
        Binding(
            "end,F",
            "log_follow",
            "Follow",
            show=False,
            priority=True,  # before the tables' own End (text lines keep theirs)
            tooltip="The log pane: go to the end of the log and follow it",
            id="log_follow",
        ),
        Binding(
            "M",
            "merged_logs",
            "Merged logs",
            tooltip="The marked processes' logs merged in the log pane",
            id="merged_logs",
        ),
        # Drill-down screens (see "detail screens" below).
        Binding("v", "events", "Events", tooltip="The master's event log, live", id="events"),
        Binding(
            "j",
            "jobs",
            "Jobs",
            tooltip="The jobs: queue, tickets; submit, cancel and fetch them",
            id="jobs",
        ),
        Binding("i", "proc_detail", "Info", show=False, tooltip="The process in detail", id="info"),
    ]

    address: reactive[str] = reactive("")

    def __init__(
        self,
        master: Master,
        deployer: Deployer,
        clock: Callable[[], float] = time.time,
        escalate_after: float = 5.0,
        columns: Sequence[str] = (),
        start_filter: str = "",
    ) -> None:
        super().__init__()
        self.master = master
        self.deployer = deployer
        self.clock = clock
        self.escalate_after = escalate_after
        # The settings file's columns and filter: in place before the first rows come.
        self.start_columns, self.start_filter = columns, start_filter
        self.tally = Tally()
        self.dialog_memory: dict[str, str] = {}  # the dialogs' last command and file, this session
        self._dirty_nodes: set[str] = set()
        self._dirty_procs: set[str] = set()
        self._removed: set[str] = set()
        self._refresh_scheduled = False
        self._procs_shown = False  # whether the processes pane had rows at its last hint
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_jobs: Callable[[], None] | None = None
        self._jobs_nodes: set[str] = set()  # nodes whose memory held by jobs moved
        self._jobs_nodes_due = False

    def compose(self) -> ComposeResult:
        yield ClusterHeader(id="header").data_bind(Dashboard.address)
        with Vertical(id="nodes-pane"):
            yield NodesTable(clock=self.clock, id="nodes")
        with Vertical(id="procs-pane"):
            yield FilterBar(id="filter")
            yield ProcsTable(clock=self.clock, source=self.master.cluster.proc, id="procs")
        yield LogPane(id="log")
        with Vertical(id="command-bar"):
            yield CommandLine(self._names, id="command")
            yield Static("", id="command-hint")
        yield KeyFooter(FOOTER_KEYS)

    def on_mount(self) -> None:
        self.query_one("#nodes-pane").border_title = "Nodes"
        self.query_one("#procs-pane").border_title = "Processes"
        self._procs_hint()
        if self.start_columns:
            self.procs.set_columns(self.start_columns)
        if self.start_filter:  # the bar shows it; table and title take it now, not a tick later
            bar = self.query_one(FilterBar)
            bar.value, bar.display = self.start_filter, True
            self._apply_filter(self.start_filter)
        self.log_pane.source = self.master.follow
        self.log_pane.pages = self.master.read_log
        self._unsubscribe = self.master.cluster.subscribe(self._on_change)
        self._jobs_mounted()
        cluster = self.master.cluster
        self._dirty_nodes.update(cluster.node_names())
        self._dirty_procs.update(p.key for p in cluster.procs())
        self.refresh_rows()
        self.procs.move_cursor(row=0)
        self.procs.focus()
        # What exists now (imports, the first screen) lives as long as the screen:
        # keep it out of full garbage collections, which otherwise stall frames.
        gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._unsubscribe_jobs is not None:
            self._unsubscribe_jobs()

    @property
    def procs(self) -> ProcsTable:
        return self.query_one(ProcsTable)

    @property
    def log_pane(self) -> LogPane:
        return self.query_one(LogPane)

    # --- model -> view ------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        """Cluster listener: remember what moved; repaint at most once per REFRESH."""
        self._dirty_nodes |= change.nodes
        self._dirty_procs |= change.procs
        self._removed |= change.removed_procs
        if not self._refresh_scheduled:
            self._refresh_scheduled = True
            self.set_timer(REFRESH, self.refresh_rows)

    def refresh_rows(self) -> None:
        """Hand the changed rows to the panes, which pull the snapshots they show."""
        self._refresh_scheduled = False
        cluster = self.master.cluster
        nodes = [cluster.node(n) for n in self._dirty_nodes if cluster.has_node(n)]
        changed, gone = [], set()
        tally, log_pane = self.tally, self.log_pane  # a DOM query: once, not once per process
        shown, followed = log_pane.key, False
        for key in self._dirty_procs | self._removed:
            if not tally.proc_in(cluster, key):
                gone.add(key)
            else:
                changed.append(key)
                followed |= key == shown
        self._dirty_nodes, self._dirty_procs, self._removed = set(), set(), set()
        with self.app.batch_update():
            self.query_one(NodesTable).update_nodes(nodes)
            procs = self.procs
            procs.refresh_keys(changed, gone)
            for n in nodes:
                tally.node(n)
            view = cluster.proc(shown) if followed and shown is not None else None
            if view is not None:
                log_pane.update_proc(view)
            header = self.query_one(ClusterHeader)
            header.counts = dict(tally.counts)
            header.ha = self.master.ha_summary()
            if bool(procs.rows) != self._procs_shown:  # empty, or no longer: say so
                self._procs_hint()

    @on(ProcsTable.Selected)
    def _selected(self, event: ProcsTable.Selected) -> None:
        self.log_pane.show(self.procs.views.get(event.key) if event.key else None)
        self.refresh_bindings()

    @on(NodesTable.FilterNode)
    def _filter_node(self, event: NodesTable.FilterNode) -> None:
        bar = self.query_one(FilterBar)
        bar.value = f"node:{event.node}" if event.node else ""  # the pane's title shows it
        bar.display = bar.display and bool(bar.value)
        self.procs.focus()

    @on(ProcsTable.ClearFilter)
    def _clear_filter(self) -> None:
        """Escape in the processes pane with nothing marked: the filter goes."""
        bar = self.query_one(FilterBar)
        bar.value = ""
        bar.display = False

    # --- filter ------------------------------------------------------------------
    def action_filter(self) -> None:
        bar = self.query_one(FilterBar)
        bar.display = True
        bar.focus()

    @on(FilterBar.Changed, "#filter")  # FilterBar.Changed is every Input's Changed
    def _filter_changed(self, event: FilterBar.Changed) -> None:
        self._apply_filter(event.value)

    def _apply_filter(self, text: str) -> None:
        self.procs.set_query(text)
        self.query_one("#procs-pane").border_title = filter_title(text)
        self._procs_hint()

    def _procs_hint(self) -> None:
        """The processes pane's lower border: what to do about an empty pane (set when
        the filter changes, and by `refresh_rows` when rows come or all go)."""
        procs = self.procs
        self._procs_shown = bool(procs.rows)
        if self._procs_shown:
            hint = ""
        elif procs.query_text:
            hint = "no process matches the filter"
        else:
            hint = "none yet: l launches a program on the selected node (d deploys one first)"
        self.query_one("#procs-pane").border_subtitle = hint

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        bar = self.query_one(FilterBar)
        bar.display = bool(bar.value)
        self.procs.focus()

    # --- launch -------------------------------------------------------------------
    def action_launch(self) -> None:
        nodes = self.master.cluster.nodes()
        preselect = preselected(nodes, self.query_one(NodesTable).selected)
        dialog = LaunchDialog(nodes, preselect, self.master.launch, memory=self.dialog_memory)
        self.app.push_screen(dialog, self._launched)

    def _launched(self, result: object) -> None:
        procs = getattr(result, "procs", None)
        if not procs:
            return
        self.refresh_rows()  # the new rows exist now, before the next tick
        self._select(procs[0].key)
        errors = getattr(result, "errors", {})
        if errors:
            text = "; ".join(f"{n}: {why}" for n, why in errors.items())
            self.notify(f"launch failed on {text}", severity="warning")

    # --- deploy and rm ---------------------------------------------------------------
    def action_deploy(self) -> None:
        nodes = self.master.cluster.nodes()
        preselect = preselected(nodes, self.query_one(NodesTable).selected)
        dialog = DeployDialog(nodes, preselect, self.deployer.deploy, memory=self.dialog_memory)
        self.app.push_screen(dialog)

    def action_remove(self) -> None:
        """rm the selected process's app (the dialog asks for one when none is selected)."""
        key = self.procs.selected
        app = self.procs.views[key].app if key is not None and key in self.procs.views else None
        alive = [n.name for n in self.master.cluster.nodes() if n.state in USABLE]
        dialog = RemoveDialog(app, alive, self._live_of_app, self._remove_everywhere)
        self.app.push_screen(dialog)

    def _live_of_app(self, app: str) -> dict[str, list[str]]:
        """The app's live processes by node, from the table's snapshots."""
        out: dict[str, list[str]] = {}
        for view in self.procs.views.values():
            if view.app == app and view.alive:
                out.setdefault(view.node, []).append(view.key)
        return out

    async def _remove_everywhere(
        self, app: str, force: bool = False, logs: bool = False
    ) -> list[RemoveResult]:
        return await self.master.remove(app, force=force, logs=logs)

    def _deploy_progress(self, feed: ProgressFeed) -> None:
        """The command line's hint shows each node's percentage while ``:deploy`` runs."""
        parts = [
            f"{node} {100 * sent // total if total else 100}%"
            for node, (sent, total) in sorted(feed.latest.items())
        ]
        self._hint("deploying… " + "  ".join(parts))

    def _select(self, key: str) -> bool:
        procs = self.procs
        if key not in procs.rows and key in procs.views:
            self.query_one(FilterBar).value = ""  # the filter hid it; show everything
            procs.set_query("")
        procs.focus()
        return procs.select(key)

    # --- signals -------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.app.screen is not self:
            return False  # a dialog is up: its keys only
        if action in _NEEDS_TARGET and not self.procs.targets():
            return None  # shown dimmed: nothing to act on
        return True

    def action_stop(self) -> None:
        self._confirm("stop")

    def action_kill(self) -> None:
        self._confirm("kill")

    def action_escalate(self) -> None:
        self._confirm("escalate")

    def _confirm(self, kind: str) -> None:
        targets = self.procs.targets()
        if not targets:
            return
        views = self.procs.views
        lines = [f"  {k:<22} {views[k].command}" for k in targets]
        what = f"{len(targets)} process{'es' if len(targets) > 1 else ''}"
        if kind == "escalate":
            secs = f"{self.escalate_after:g}s"
            title = f"Stop {what} with SIGINT, then SIGKILL after {secs} if still alive?"
            verb = "Escalate"
        else:
            sig, verb, how = SIGNALS[kind]
            title = f"{verb} {what} ({how}, {sig} to the process group)?"

        def done(ok: bool | None) -> None:
            if not ok:
                return
            self.procs.action_clear_marks()
            if kind == "escalate":
                self._escalate(targets)
            else:
                self._signal(SIGNALS[kind][0], targets)

        self.app.push_screen(ConfirmDialog(title, lines, verb), done)

    # Not exclusive: a second stop must not cancel the first one in flight.
    @work(group="signal", exit_on_error=False)
    async def _signal(self, signal: str, targets: list[str]) -> None:
        await self._send(signal, targets)

    async def _send(self, signal: str, targets: list[str]) -> None:
        results = await self.master.signal(targets, signal)
        failed = [f"{r.target}: {r.message or 'not delivered'}" for r in results if not r.delivered]
        if failed:
            self.notify("; ".join(failed), severity="error")
        else:
            self.notify(f"{signal} sent to {', '.join(targets)}")

    # Not exclusive either: each escalation keeps its own countdown.
    @work(group="escalate", exit_on_error=False)
    async def _escalate(self, targets: list[str]) -> None:
        """SIGINT now; SIGKILL at the deadline to those still alive; the row counts down."""
        await self._send("SIGINT", targets)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.escalate_after
        try:
            while (left := deadline - loop.time()) > 0:
                alive = self._alive(targets)
                if not alive:
                    return
                for key in alive:
                    self.procs.set_countdown(key, math.ceil(left))
                await asyncio.sleep(min(0.25, left))
            alive = self._alive(targets)
            if alive:
                await self._send("SIGKILL", alive)
        finally:
            for key in targets:
                self.procs.set_countdown(key, None)

    def _alive(self, targets: list[str]) -> list[str]:
        views = [self.master.cluster.proc(k) for k in targets]
        return [v.key for v in views if v is not None and v.alive]

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """Every verb's error, shown once: in the command line if it ran one, else a toast."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        expected = isinstance(error, VerbError | CommandError | wire.BadInput)
        text = str(error) if expected else f"{type(error).__name__}: {error}"
        if event.worker.group == "command":
            self._hint(text, error=True)
        else:
            self.notify(text, severity="error", timeout=8)

    # --- log pane ----------------------------------------------------------------------
    def action_log_follow(self) -> None:
        """End / F anywhere: the log pane follows (End in a text line stays its own)."""
        if isinstance(self.focused, Input):
            raise SkipAction()
        self.log_pane.action_follow()

    def action_merged_logs(self) -> None:
        """The marked (or selected) processes' logs, merged in the log pane."""
        views = [v for k in self.procs.targets() if (v := self.procs.views.get(k)) is not None]
        if views:
            self.log_pane.show_merged(views)

    # --- help ------------------------------------------------------------------------
    def action_help(self) -> None:
        keys = rebind(help_sections(), self.app._keymap)  # as the settings file set them
        self.app.push_screen(HelpScreen(keys))

    # --- the : command line ------------------------------------------------------
    def action_command(self) -> None:
        bar = self.query_one("#command-bar")
        bar.display = True
        self.query_one(CommandLine).focus()

    def _names(self) -> tuple[list[str], list[str], list[str]]:
        views = self.procs.views.values()
        apps = sorted({v.app for v in views})
        return self.master.cluster.node_names(), [v.key for v in views], apps

    def _hint(self, text: str, error: bool = False) -> None:
        hint = self.query_one("#command-hint", Static)
        hint.set_class(error, "error")
        hint.update(text)

    @on(CommandLine.Hint)
    def _on_hint(self, event: CommandLine.Hint) -> None:
        self._hint(event.text)

    @on(CommandLine.Closed)
    def _close_command(self) -> None:
        self._hint("")
        self.query_one("#command-bar").display = False
        self.procs.focus()
        self.log_pane.resume()

    @on(CommandLine.Run)
    def _run_command(self, event: CommandLine.Run) -> None:
        if self._screen_word(event.line):
            return
        try:
            nodes = self.master.cluster.nodes()
            command = parse(event.line, preselected(nodes, self.query_one(NodesTable).selected))
        except CommandError as e:
            self._hint(str(e), error=True)
            return
        self._hint("running…")
        self._command(command)

    def _screen_word(self, line: str) -> bool:
        """``:q``/``:quit`` quit as ``q`` does; ``:h``/``:help`` and ``:events`` open screens."""
        word = screen_word(line)
        if word is None:
            return False
        self.query_one(CommandLine).value = ""
        self._close_command()
        self.call_later(self.run_action, "app.quit" if word == "quit" else word)
        return True

    @work(exclusive=True, group="command", exit_on_error=False)
    async def _command(self, cmd: Command) -> None:
        """Run one parsed command; close the command line when it did something."""
        name = cmd.verb.name
        if name == "logs":  # the pane follows it, through the route's own Master.follow
            done = self._follow_in_pane(cmd.args.target)
        else:
            reply = await self._call(cmd)
            out = cmd.verb.text(cmd.args, reply)
            if out.status and not out.out:  # nothing worked: the line stays, to fix
                raise CommandError("; ".join(out.err) or f"{name} failed")
            if out.err and name != "submit":  # submit's err is where the job went: _show
                self.notify("\n".join(out.err), severity="warning")
            done = self._show(cmd, reply, out)
        self.query_one(CommandLine).value = ""
        self._close_command()
        if name == "logs":
            self.log_pane.focus()
        if done:
            self.notify(done)

    async def _call(self, cmd: Command) -> Any:
        """The verb's Master call, with its request checked as the API checks it."""
        feed = ProgressFeed(self, lambda _: self._deploy_progress(feed))
        req = wire.convert(cmd.request, cmd.verb.shape)
        if cmd.verb.name == "fetch":  # the route streams its progress; here it is awaited
            result = await fetch(self.master, self.deployer.ssh_config(), req.id, req.to, None)
            return {"result": wire.builtins(result)}
        reply = await cmd.verb.call(Plane(self.master, self.deployer, feed), req)
        feed.drain()
        return wire.builtins(reply)

    def _show(self, cmd: Command, reply: Any, out: Output) -> str:
        """What the screen does with a verb's reply; the line to notify."""
        name = cmd.verb.name
        if name == "launch":
            keys = [p["key"] for p in reply["procs"]]
            self.refresh_rows()  # the new rows exist now, before the next tick
            self._select(keys[0])
            return f"launched {', '.join(keys)}"
        if name == "deploy":
            return summary(reply)
        if name in ("nodes", "ps", "usage", "masters") or cmd.args.json:
            text = json.dumps(reply, indent=2) if cmd.args.json else "\n".join(out.out)
            self.app.push_screen(CommandOutput(f"corral {name}", text))
            return ""
        if name in ("jobs", "job", "submit"):
            return self._show_job_verb(name, reply)
        return "\n".join(out.out)

    def _follow_in_pane(self, target: str) -> str:
        if not self._select(target):
            raise VerbError(f"no such process: {target}")
        return ""

    # --- detail screens: events, node, process ------------------------------------------
    def action_events(self) -> None:
        self.app.push_screen(EventsScreen(self.master.cluster, clock=self.clock))

    @on(NodesTable.OpenNode)
    def _open_node(self, event: NodesTable.OpenNode) -> None:
        detail = NodeDetail(self.master.cluster, event.node, self.clock, self._open_proc)
        self.app.push_screen(detail)

    def action_proc_detail(self) -> None:
        if self.procs.selected is not None:
            self._open_proc(self.procs.selected)

    def _open_proc(self, key: str) -> None:
        self.app.push_screen(ProcDetail(self.master.cluster, key, self.clock))

    @on(LiveTable.RowSelected, "#procs")
    def _proc_entered(self, event: LiveTable.RowSelected) -> None:
        self._open_proc(event.row_key)

    # --- jobs (corral.tui.widgets.jobs): the view, tickets, and memory they hold --------------
    def _jobs_mounted(self) -> None:
        """The nodes pane shows what jobs hold on each node, redrawn as jobs move."""
        self.query_one(NodesTable).held = self.master.jobs.held
        self._unsubscribe_jobs = self.master.jobs.subscribe(self._on_jobs)

    def _on_jobs(self, ids: frozenset[int]) -> None:
        """`Jobs` listener: the nodes of the jobs that moved; their rows at the next REFRESH."""
        jobs = self.master.jobs
        for job_id in ids:
            job = jobs.open.get(job_id)
            if job is None:  # ended: the store has its last word
                try:
                    job = jobs.get(job_id)
                except VerbError:
                    continue
            if job.replicas and job.replicas[0].node:  # a queued job holds nothing
                self._jobs_nodes.update(r.node for r in job.replicas if r.node)
        if self._jobs_nodes and not self._jobs_nodes_due:
            self._jobs_nodes_due = True
            self.set_timer(REFRESH, self._jobs_nodes_moved)

    def _jobs_nodes_moved(self) -> None:
        self._jobs_nodes_due = False
        names, self._jobs_nodes = self._jobs_nodes, set()
        self.query_one(NodesTable).jobs_changed(names)

    def action_jobs(self) -> None:
        self.app.push_screen(self._jobs_screen())

    def _jobs_screen(self) -> JobsScreen:
        return JobsScreen(
            self.master,
            self.deployer.ssh_config,
            self._show_job_log,
            clock=self.clock,
            memory=self.dialog_memory,
        )

    def _show_job_verb(self, name: str, reply: Any) -> str:
        """``:jobs`` opens the jobs view, ``:job ID`` the ticket; ``:submit`` says where it went."""
        if name == "submit":
            return submitted_line(reply)
        screen = self._jobs_screen()
        self.app.push_screen(screen)
        if name == "job":
            screen.call_after_refresh(screen.open_ticket, int(reply["id"]))
        return ""

    def _show_job_log(self, key: str) -> None:
        """A replica's log (from a ticket): back to this screen, the process in the log pane."""
        self.call_later(self._show_log_of, key)

    async def _show_log_of(self, key: str) -> None:
        while len(self.app.screen_stack) > 1 and self.app.screen is not self:
            await self.app.pop_screen()
        if not self._select(key):
            view = self.master.cluster.proc(key)
            if view is None:
                self.notify(f"no such process: {key}", severity="warning")
                return
            self.log_pane.show(view)
        self.log_pane.focus()


def help_sections() -> list[tuple[str, list[BindingType]]]:
    """Key bindings by where they work, for the help screen and the palette."""
    return [
        ("anywhere", list(Dashboard.BINDINGS)),
        ("processes", list(ProcsTable.BINDINGS)),
        ("nodes", list(NodesTable.BINDINGS)),
        ("log", list(LogPane.BINDINGS)),
        ("filter line", list(FilterBar.BINDINGS)),
        ("command line", list(CommandLine.BINDINGS)),
        ("confirmation", list(ConfirmDialog.BINDINGS)),
        ("launch dialog", list(LaunchDialog.BINDINGS)),
        ("deploy dialog", list(DeployDialog.BINDINGS)),
        ("rm dialog", list(RemoveDialog.BINDINGS)),
        ("jobs", list(JobsScreen.BINDINGS)),
        ("job ticket", list(TicketScreen.BINDINGS)),
        ("submit dialog", list(SubmitDialog.BINDINGS)),
        ("fetch dialog", list(FetchDialog.BINDINGS)),
        ("events", [*EventsScreen.BINDINGS, *EventsPane.BINDINGS]),
        ("node detail", list(NodeDetail.BINDINGS)),
        ("process detail", list(ProcDetail.BINDINGS)),
    ]
