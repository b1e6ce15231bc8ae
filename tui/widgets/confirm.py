"""A yes/no dialog that names exactly what an action will do."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter


class ConfirmDialog(ModalScreen[bool]):
    """Dismisses with True on confirm (``y``/Enter), False on cancel (``n``/Escape)."""

    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    BINDINGS = [
        Binding("y", "confirm", "Yes", tooltip="Confirm: send the signal"),
        Binding("n,escape", "cancel", "No", tooltip="Cancel: send nothing"),
    ]

    def __init__(self, title: str, lines: list[str], verb: str) -> None:
        super().__init__()
        self.title_text = title
        self.lines = lines
        self.verb = verb

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static("\n".join(self.lines), id="confirm-targets", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.verb, variant="error", id="confirm")
                yield Button("Cancel", id="cancel")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#confirm", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
