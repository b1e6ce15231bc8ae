"""The rm dialog: remove an app from every alive node that has it, after saying so.

It names the app and the nodes (with the app's running processes on each),
offers "force" and "also delete logs", runs `Master.remove` in a worker and
shows each node's result in place; it stays open until closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from corral.master.control import RemoveResult
from corral.master.deploy_report import for_dialog
from corral.master.verbs.rm import result_line
from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter
from corral.tui.widgets.node_picker import TickBox

Remover = Callable[..., Awaitable[list[RemoveResult]]]
Running = Callable[[str], dict[str, list[str]]]  # app -> {node: its live NODE:PIDs}


def node_lines(nodes: Sequence[str], running: dict[str, list[str]]) -> list[str]:
    """The nodes the app goes from, each with its running processes of the app."""
    lines = []
    for n in nodes:
        keys = running.get(n, [])
        alive = f"  {len(keys)} running: {', '.join(keys)}" if keys else ""
        lines.append(f"  {n:<16}{alive}")
    return lines


class RemoveDialog(ModalScreen[list[RemoveResult] | None]):
    """Confirm and run ``rm APP``; asks for the app when none was selected."""

    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    BINDINGS = [
        Binding("ctrl+s", "remove", "Remove", tooltip="Remove the app (Enter on Remove too)"),
        Binding("escape", "close", "Close", tooltip="Close the remove dialog"),
    ]

    def __init__(
        self, app_name: str | None, nodes: Sequence[str], running: Running, remover: Remover
    ) -> None:
        super().__init__()
        self.app_name = app_name
        self.nodes = list(nodes)
        self.running = running
        self.remover = remover
        self.results: list[RemoveResult] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label("", id="remove-title", classes="dialog-title")
            yield Static("Its executables and libraries go; its logs stay unless asked.")
            if self.app_name is None:
                yield Label("App")
                yield Input(placeholder="app name", id="remove-app", compact=True)
            yield Static("", id="confirm-targets", markup=False)
            yield TickBox(
                "Force: stop its running processes first (SIGINT, then SIGKILL)",
                id="remove-force",
                compact=True,
            )
            yield TickBox("Also delete its logs", id="remove-logs", compact=True)
            yield Static("", id="remove-result", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Remove", variant="error", id="remove")
                yield Button("Close", id="close")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._describe(self.app_name or "")
        if self.app_name is None:
            self.query_one("#remove-app", Input).focus()
        else:
            self.query_one("#remove", Button).focus()

    @property
    def app_text(self) -> str:
        if self.app_name is not None:
            return self.app_name
        return self.query_one("#remove-app", Input).value.strip()

    @on(Input.Changed, "#remove-app")
    def _app_changed(self, event: Input.Changed) -> None:
        self._describe(event.value.strip())

    def _describe(self, app: str) -> None:
        """Title and node lines for ``app``, from the dashboard's snapshot (no I/O)."""
        title = f"Remove app {app or 'APP'} from every alive node that has it?"
        self.query_one("#remove-title", Label).update(title)
        lines = node_lines(self.nodes, self.running(app) if app else {})
        self.query_one("#confirm-targets", Static).update("\n".join(lines) or "  no alive node")

    @on(Input.Submitted)
    @on(Button.Pressed, "#remove")
    def action_remove(self) -> None:
        out = self.query_one("#remove-result", Static)
        app = self.app_text
        if not app:
            out.update("Give the app to remove.")
            return
        out.update("Removing…")
        force = self.query_one("#remove-force", Checkbox).value
        logs = self.query_one("#remove-logs", Checkbox).value
        self._remove(app, force, logs)

    @work(exclusive=True, group="remove", exit_on_error=False)
    async def _remove(self, app: str, force: bool, logs: bool) -> None:
        out = self.query_one("#remove-result", Static)
        try:
            results = await self.remover(app, force=force, logs=logs)
        except Exception as e:  # VerbError and anything else: one line here
            out.set_class(False, "ok")
            out.update(for_dialog(" ".join(str(e).split())) or type(e).__name__)
            return
        self.results = results
        out.set_class(not any(r.error for r in results), "ok")
        # As `corral rm` says it, in the dialog's words ("tick Force", not "use --force").
        lines = [for_dialog(result_line(msgspec.to_builtins(r), app)) for r in results]
        out.update("\n".join(lines) or "no node answered")
        if not any(r.error for r in results):
            self.query_one("#remove", Button).disabled = True
            self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.results)
