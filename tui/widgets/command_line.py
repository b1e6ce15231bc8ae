"""The ``:`` command line: the CLI's verbs, with Tab completion of names; and what they print."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from corral.tui.commands import VERBS, complete
from corral.tui.widgets.footer import KeyFooter

Names = Callable[[], tuple[list[str], list[str], list[str]]]


class CommandLine(Input):
    """Posts `Run` with the line on Enter; Tab completes; Escape closes."""

    BINDINGS = [
        Binding(
            "tab",
            "complete",
            "Complete",
            priority=True,
            tooltip="Complete a verb, node or NODE:PID",
        ),
        Binding("escape", "close", "Close", tooltip="Close the command line"),
    ]

    class Run(Message):
        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    class Closed(Message):
        """The operator left the command line."""

    class Hint(Message):
        """Text for the hint line: completion candidates or an error."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, names: Names, **kwargs: object) -> None:
        hint = " | ".join(VERBS) + "   (Tab completes)"
        super().__init__(placeholder=hint, **kwargs)  # type: ignore[arg-type]
        self.names = names

    def action_complete(self) -> None:
        nodes, procs, apps = self.names()
        line, found = complete(self.value, nodes, procs, apps)
        self.value = line
        self.cursor_position = len(line)
        self.post_message(self.Hint("  ".join(found[:20]) if len(found) > 1 else ""))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.value.strip():
            self.post_message(self.Run(self.value))

    def action_close(self) -> None:
        self.value = ""
        self.post_message(self.Closed())


class CommandOutput(ModalScreen[None]):
    """What a verb printed (``:ps``, ``:usage``, ``--json``): the CLI's own text, until closed."""

    DEFAULT_CSS = """
    CommandOutput #command-output {
        width: auto;
        min-width: 60;
        max-width: 100%;
        overflow-x: auto;
    }
    CommandOutput #command-output Static {
        width: auto;
    }
    """
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="command-output", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text, markup=False, id="command-output-text")
        yield KeyFooter()

    def action_close(self) -> None:
        self.dismiss(None)
