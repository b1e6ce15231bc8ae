"""The submit dialog (``n`` in the jobs view): a job's fields, and where it would go, first.

As the fields change the dialog shows `Jobs.preview` for them: the nodes
the replicas would be placed on now, or why the job would wait (behind
another job, or each node's shortfall), or why it could never run.  The
preview follows the cluster too (a job ending, a node joining) while the
dialog is open.  Submit calls `Jobs.submit` (the call behind ``corral
submit``); an error stays in the dialog in one line, success closes it
with a notification ("job 7 queued ...", "job 7 running on n1, n2").
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from corral.master.control import VerbError
from corral.master.job_report import submitted_line
from corral.master.jobs import DEFAULT_MEM, MAX_REPLICAS, Jobs
from corral.master.text import human_bytes
from corral.master.tickets import Job
from corral.master.verbs.base import UsageError, leading_env
from corral.transport.sizes import SizeError, parse_size
from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter
from corral.tui.widgets.node_picker import TickBox

PREVIEW_NODES = 8  # nodes named one by one; more are counted per node


class FormError(ValueError):
    """A field is wrong; the message says which and how, in one line."""


@dataclass(frozen=True)
class SubmitForm:
    """The dialog's fields, parsed."""

    argv: list[str]
    count: int
    mem: int
    spread: bool
    app: str | None
    name: str | None
    outputs: list[str]
    bundle: str | None = None  # an absolute path on the master's machine
    env: dict[str, str] = field(default_factory=dict)  # NAME=VALUE words before the command


def parse_count(text: str) -> int:
    try:
        n = int(text.strip())
    except ValueError:
        raise FormError(f"replicas: {text.strip()!r} is not a number") from None
    if not 1 <= n <= MAX_REPLICAS:
        raise FormError(f"replicas: give 1 to {MAX_REPLICAS}")
    return n


def parse_mem(text: str) -> int:
    try:
        return parse_size(text.strip() or "0")
    except SizeError as e:
        raise FormError(f"memory: {e}") from None


def parse_bundle(text: str) -> str | None:
    """The bundle field: None when empty, else the path made absolute (``~`` expanded)."""
    text = text.strip()
    if not text:
        return None
    return os.path.abspath(os.path.expanduser(text))


def placement_text(nodes: list[str]) -> str:
    """``n1, n1, n2``; for many replicas ``n1 x 40, n2 x 38``."""
    if len(nodes) <= PREVIEW_NODES:
        return ", ".join(nodes)
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(f"{n} x {c}" for n, c in counts.items())


class SubmitDialog(ModalScreen[Job | None]):
    """Submit a job: N replicas of a command; the placement previewed before it commits."""

    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Close the dialog, submitting nothing"),
        Binding("ctrl+s", "submit", "Submit", tooltip="Submit the job (Enter in a field does too)"),
    ]

    def __init__(self, jobs: Jobs, memory: dict[str, str] | None = None) -> None:
        super().__init__()
        self.jobs = jobs
        # The last fields given, kept by the caller for the session.
        self.memory = memory if memory is not None else {}
        self.job: Job | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._scheduled = False

    def compose(self) -> ComposeResult:
        mem = self.memory
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label("Submit a job", classes="dialog-title")
            yield Label("Command line (NAME=VALUE words first set variables, as in a shell)")
            yield Input(
                mem.get("submit.command", ""),
                placeholder="./simulate --steps 1000",
                id="submit-command",
                compact=True,
            )
            with Horizontal(id="submit-sizes"):
                yield Label("Replicas", classes="submit-label")
                yield Input(mem.get("submit.replicas", "1"), id="submit-replicas", compact=True)
                yield Label("Memory each", classes="submit-label")
                yield Input(
                    mem.get("submit.mem", human_bytes(DEFAULT_MEM)),
                    placeholder="100M",
                    id="submit-mem",
                    compact=True,
                )
            yield TickBox("Spread: at most one replica a node", id="submit-spread", compact=True)
            yield Label("App and name (optional; default: the program's name)")
            with Horizontal(id="submit-names"):
                yield Input(
                    mem.get("submit.app", ""), placeholder="app", id="submit-app", compact=True
                )
                yield Input(
                    mem.get("submit.name", ""), placeholder="name", id="submit-name", compact=True
                )
            yield Label("Bundle to unpack in each replica's directory first (optional)")
            yield Input(
                mem.get("submit.bundle", ""),
                placeholder="app.tar.gz, a .zip or a directory (command: make run, ./run.sh)",
                id="submit-bundle",
                compact=True,
            )
            yield Label("Outputs to fetch back (file patterns, space separated; optional)")
            yield Input(
                mem.get("submit.outputs", ""),
                placeholder="out.txt results/*.csv",
                id="submit-outputs",
                compact=True,
            )
            yield Static("", id="submit-preview", markup=False)
            yield Static("", id="submit-line", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="submit")
                yield Button("Close", id="close")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._unsubscribe = self.jobs.subscribe(self._on_jobs)
        self.preview()
        self.query_one("#submit-command", Input).focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    # --- the form ------------------------------------------------------------------------
    def _value(self, id: str) -> str:
        return self.query_one(f"#{id}", Input).value

    def form(self) -> SubmitForm:
        """The fields, parsed; `FormError` names the first wrong one."""
        try:
            env, argv = leading_env(shlex.split(self._value("submit-command")))
        except (ValueError, UsageError) as e:
            raise FormError(f"command line: {e}") from None
        count = parse_count(self._value("submit-replicas"))
        mem = parse_mem(self._value("submit-mem"))
        if not argv:
            raise FormError("command line: give the program to run")
        return SubmitForm(
            argv=argv,
            count=count,
            mem=mem,
            spread=self.query_one("#submit-spread", TickBox).value,
            app=self._value("submit-app").strip() or None,
            name=self._value("submit-name").strip() or None,
            outputs=self._value("submit-outputs").split(),
            bundle=parse_bundle(self._value("submit-bundle")),
            env=env,
        )

    @on(Input.Changed)
    @on(TickBox.Changed)
    def preview(self) -> None:
        """Where the job would go now, or why it would wait or never run (or what is wrong)."""
        box = self.query_one("#submit-preview", Static)
        try:
            count = parse_count(self._value("submit-replicas"))
            mem = parse_mem(self._value("submit-mem"))
        except FormError as e:
            box.set_classes("bad")
            box.update(str(e))
            return
        spread = self.query_one("#submit-spread", TickBox).value
        nodes, why = self.jobs.preview(count, mem, spread)
        if nodes:
            box.set_classes("ok")
            box.update(f"Would place {count} x {human_bytes(mem)} now on {placement_text(nodes)}")
        elif why.startswith("can never"):
            box.set_classes("bad")
            box.update(f"Would be refused: it {why}")
        else:  # "would wait behind job 3", "would wait: needs ...; n1 ... free of ..."
            box.set_classes("wait")
            box.update(f"Would be queued: {why.removeprefix('would wait').lstrip(': ')}")

    def _on_jobs(self, ids: frozenset[int]) -> None:
        """Placement moved (a job started or ended): the preview follows, once per burst."""
        if not self._scheduled:
            self._scheduled = True
            self.set_timer(0.1, self._jobs_moved)

    def _jobs_moved(self) -> None:
        self._scheduled = False
        self.preview()

    # --- submit ----------------------------------------------------------------------------
    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        line = self.query_one("#submit-line", Static)
        for key in ("command", "replicas", "mem", "app", "name", "bundle", "outputs"):
            self.memory[f"submit.{key}"] = self._value(f"submit-{key}")
        try:
            form = self.form()
        except FormError as e:
            line.update(str(e))
            return
        line.update("Submitting…")
        self._submit(form)

    @work(exclusive=True, group="submit", exit_on_error=False)
    async def _submit(self, form: SubmitForm) -> None:
        line = self.query_one("#submit-line", Static)
        try:
            job = await self.jobs.submit(
                form.argv,
                count=form.count,
                mem=form.mem,
                spread=form.spread,
                app=form.app,
                name=form.name,
                outputs=form.outputs,
                bundle=form.bundle,
                env=form.env or None,
            )
        except Exception as e:  # VerbError and any other: one line, the form stays
            text = str(e) if isinstance(e, VerbError) else f"{type(e).__name__}: {e}"
            line.update(" ".join(text.split()))
            return
        self.job = job
        self.app.notify(submitted_line(self.jobs.ticket(job)))
        self.dismiss(job)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
