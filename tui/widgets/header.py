"""The one-line header: node and process counts and the master's address."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from corral.tui.format import NODE_STYLES, NODE_SYMBOLS


class ClusterHeader(Static):
    """Counts by state, rendered from the ``counts`` and ``address`` attributes."""

    DEFAULT_CSS = """
    ClusterHeader { height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    counts: reactive[dict[str, int]] = reactive(dict)  # repaints only when a count moved
    address: reactive[str] = reactive("")

    def render(self) -> Text:
        return render_header(self.counts, self.address)


def render_header(counts: Mapping[str, int], address: str) -> Text:
    text = Text()
    text.append(" corral ", style="bold reverse")
    text.append("  nodes ")
    for state in ("alive", "suspect", "lost"):
        n = counts.get(state, 0)
        style = NODE_STYLES[state] if n or state == "alive" else "dim"
        text.append(f"{NODE_SYMBOLS[state]} {n} {state}  ", style=style)
    text.append("│ processes ")
    text.append(f"{counts.get('running', 0)} running  ", style="green")
    text.append(f"{counts.get('ended', 0)} ended  ")
    failed = counts.get("failed", 0)
    text.append(f"{failed} failed  ", style="bold red" if failed else "dim")
    text.append("│ master ")
    text.append(address or "not listening", style="bold" if address else "dim")
    return text
