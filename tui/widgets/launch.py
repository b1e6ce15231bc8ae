"""The launch dialog: nodes, app and command line; errors stay in the dialog."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from corral.master.control import LaunchResult
from corral.master.model import NodeView
from corral.master.verbs.base import UsageError, leading_env
from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter
from corral.tui.widgets.node_picker import NodePicker

Launcher = Callable[..., Awaitable[LaunchResult]]


class LaunchDialog(ModalScreen[LaunchResult | None]):
    """Pick nodes (or all alive), an optional app and a command; dismisses with the result."""

    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", tooltip="Close the launch dialog"),
        Binding("ctrl+s", "launch", "Launch", tooltip="Launch (Enter in a field does too)"),
    ]

    def __init__(
        self,
        nodes: Sequence[NodeView],
        preselect: str | None,
        launcher: Launcher,
        memory: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.preselect = preselect
        self.launcher = launcher
        # The last command and app given, kept by the caller for the session.
        self.memory = memory if memory is not None else {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label("Launch a program", classes="dialog-title")
            yield NodePicker(self.nodes, self.preselect, id="launch-nodes")
            yield Label("App (optional, default: the program's name)")
            yield Input(
                self.memory.get("launch.app", ""),
                placeholder="app name",
                id="launch-app",
                compact=True,
            )
            yield Label("Command line (NAME=VALUE words first set variables, as in a shell)")
            yield Input(
                self.memory.get("launch.command", ""),
                placeholder="e.g. sleep 60",
                id="launch-command",
                compact=True,
            )
            yield Static("", id="launch-error")
            with Horizontal(classes="buttons"):
                yield Button("Launch", variant="primary", id="launch")
                yield Button("Cancel", id="cancel")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#launch-command", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        error = self.query_one("#launch-error", Static)
        try:
            env, argv = leading_env(shlex.split(self.query_one("#launch-command", Input).value))
        except (ValueError, UsageError) as e:
            error.update(f"Command line: {e}")
            return
        if not argv:
            error.update("Give a command line to run.")
            return
        picker = self.query_one(NodePicker)
        if problem := picker.problem():
            error.update(problem)
            return
        app = self.query_one("#launch-app", Input).value.strip() or None
        self.memory["launch.command"] = self.query_one("#launch-command", Input).value
        self.memory["launch.app"] = app or ""
        error.update("Launching…")
        self._launch(argv, picker.selected, picker.all_nodes, app, env)

    @work(exclusive=True, group="launch", exit_on_error=False)
    async def _launch(
        self,
        argv: list[str],
        nodes: list[str],
        all_nodes: bool,
        app: str | None,
        env: dict[str, str],
    ) -> None:
        error = self.query_one("#launch-error", Static)
        try:
            result = await self.launcher(
                argv, nodes=nodes, all_nodes=all_nodes, app=app, env=env or None
            )
        except Exception as e:  # VerbError and anything else: the operator reads it here
            error.update(str(e) or type(e).__name__)
            return
        if not result.procs:
            error.update("; ".join(f"{n}: {why}" for n, why in result.errors.items()))
            return
        self.dismiss(result)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "launch")
        self.dismiss(None)
