"""Choosing nodes in a dialog: one, several, or every alive one.

The launch and deploy dialogs share it.  Lost and left nodes are listed but
cannot be picked, so the operator sees why a node is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, Label, SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.selection_list import Selection

from corral.master.model import NodeView
from corral.tui.format import NODE_SYMBOLS

USABLE = ("alive", "suspect")
TICKED, UNTICKED = "[x]", "[ ]"  # told apart without colour


class TickBox(Checkbox):
    """A checkbox drawn "[x]" when ticked and "[ ]" when not, not by colour alone."""

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.styled(TICKED if self.value else UNTICKED, style)


class TickList(SelectionList[str]):
    """A selection list whose boxes read "[x]" / "[ ]" (same width as Textual's)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        if len(segments) < 3 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip
        try:
            option = self.get_option_at_index(self.scroll_offset.y + y)
        except Exception:  # no option on this line
            return strip
        box = TICKED if option.value in self.selected else UNTICKED
        style = segments[1].style
        segments[0:3] = [Segment(box, style)]
        return Strip(segments, strip.cell_length)


class NodePicker(Vertical):
    """A list of nodes (space toggles) and an "All alive nodes" checkbox."""

    DEFAULT_CSS = """
    NodePicker {
        height: auto;
    }
    NodePicker SelectionList {
        height: auto;
        max-height: 8;
        background: $boost;
    }
    NodePicker Checkbox {
        margin-top: 1;
    }
    """

    def __init__(self, nodes: Sequence[NodeView], preselect: str | None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.nodes = list(nodes)
        self.preselect = preselect

    def compose(self) -> ComposeResult:
        yield Label("Nodes (space toggles)")
        yield TickList(*self._choices(), compact=True)
        yield TickBox("All alive nodes", compact=True)

    def _choices(self) -> list[Selection[str]]:
        out = []
        for n in self.nodes:
            usable = n.state in USABLE
            label = f"{NODE_SYMBOLS[n.state]} {n.name}  {n.state}  {n.address}"
            picked = usable and n.name == self.preselect
            out.append(Selection(label, n.name, picked, disabled=not usable))
        return out

    @on(Checkbox.Changed)
    def _all_toggled(self, event: Checkbox.Changed) -> None:
        self.query_one(SelectionList).disabled = event.value

    @property
    def all_nodes(self) -> bool:
        return self.query_one(Checkbox).value

    @property
    def selected(self) -> list[str]:
        """The ticked nodes; empty when "all alive" is chosen."""
        if self.all_nodes:
            return []
        return list(self.query_one(SelectionList).selected)

    def expected(self) -> list[str]:
        """The nodes a verb will act on, as far as this snapshot of the cluster knows."""
        if self.all_nodes:
            return [n.name for n in self.nodes if n.state in USABLE]
        return self.selected

    def problem(self) -> str:
        """Why the choice cannot be used, or ""."""
        if not self.all_nodes and not self.selected:
            return "Choose at least one node, or all alive nodes."
        return ""


def preselected(nodes: Sequence[NodeView], here: str | None) -> str | None:
    """The node to tick first: the one under the nodes cursor if usable, else the first alive."""
    alive = [n.name for n in nodes if n.state in USABLE]
    return here if here in alive else (alive[0] if alive else None)
