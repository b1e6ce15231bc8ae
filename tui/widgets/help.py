"""The ``?`` screen: every key and every ``:`` command, from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from corral.tui.commands import USAGE
from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter

# Keys that come from Textual itself or the mouse, not from our BINDINGS.
BUILTIN = [
    ("tab / shift+tab", "Move focus to the next / previous pane"),
    ("↑ ↓ pgup pgdn", "Move the cursor; scroll the log"),
    ("click", "Select a node, a process or a column to sort by"),
    ("ctrl+p", "Command palette: every action by name"),
]


def key_name(binding: Binding) -> str:
    """The binding's first key as the operator types it: ":" not "colon", "k" not "k,ctrl+k"."""
    return format_key(binding.key.split(",")[0].strip())


def key_rows(sections: Iterable[tuple[str, list[BindingType]]]) -> list[tuple[str, str, str]]:
    """(section, keys, description) for every binding that has a description."""
    rows = []
    for section, bindings in sections:
        for b in bindings:
            if isinstance(b, Binding) and b.description:
                keys = " / ".join(format_key(k.strip()) for k in b.key.split(","))
                rows.append((section, keys, b.tooltip or b.description))
    return rows


class HelpScreen(ModalScreen[None]):
    """Keys by pane, then the command-line verbs; any of Escape, q, ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]
    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    def __init__(self, sections: list[tuple[str, list[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog"):
            yield Label("corral: keys and commands", classes="dialog-title")
            yield Static(self._keys_table())
            yield Static(self._commands_table())
        yield KeyFooter()

    def _keys_table(self) -> Table:
        table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
        table.add_column("Where", style="dim")
        table.add_column("Key", style="bold cyan", no_wrap=True)
        table.add_column("Does")
        last = ""
        for section, keys, desc in key_rows(self.sections):
            table.add_row(section if section != last else "", keys, desc)
            last = section
        for i, (keys, desc) in enumerate(BUILTIN):
            table.add_row("" if i else "textual", keys, desc)
        return table

    def _commands_table(self) -> Table:
        table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
        table.add_column(": command", style="bold cyan", no_wrap=True)
        for usage in USAGE.values():
            table.add_row(Text(usage))
        table.add_row(Text("Tab completes node names and NODE:PID", style="dim"))
        return table

    def action_close(self) -> None:
        self.dismiss(None)
