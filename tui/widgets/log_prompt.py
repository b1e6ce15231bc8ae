"""A one-line question at the foot of the screen: the log pane's search text and save path."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class LogPrompt(ModalScreen[str | None]):
    """Asks for one line; Enter answers it, Esc answers None."""

    DEFAULT_CSS = """
    LogPrompt {
        align: left bottom;
        background: $background 30%;
    }
    LogPrompt > #log-prompt-box {
        height: auto;
        width: 100%;
        padding: 0 1;
        background: $panel;
        border-top: solid $accent;
    }
    LogPrompt #log-prompt-input {
        border: none;
        height: 1;
        padding: 0;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", tooltip="Close without answering")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="log-prompt-box"):
            yield Label(self.question, id="log-prompt-question")
            yield Input(self.value, placeholder=self.placeholder, id="log-prompt-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
