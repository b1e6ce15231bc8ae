"""Choosing nodes in a dialog: one, several, or every alive one.

The launch and deploy dialogs share it.  Lost and left nodes are listed but
cannot be picked, so the operator sees why a node is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Checkbox, Label, SelectionList
from textual.widgets.selection_list import Selection

from corral.master.model import NodeView
from corral.tui.format import NODE_SYMBOLS

USABLE = ("alive", "suspect")


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
        yield SelectionList[str](*self._choices(), compact=True)
        yield Checkbox("All alive nodes", compact=True)

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
