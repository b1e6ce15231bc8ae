"""The one-line header: node and process counts, the master's address, the second shell.

The line is made of sections, each with forms from the fullest to the
shortest (or none).  `render_header` starts from every section's fullest
form and, while the line is wider than the header, shortens sections in
the order `SHRINK` gives, least needed first: a section is never cut
mid-word, it takes a shorter form or goes.  So at 80 columns the counts
("● 3 alive", "4 running") and how to reach the master from another shell
stay, while the labels, the address and the q hint go; at 200 columns
everything shows.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from corral.tui.format import NODE_STYLES, NODE_SYMBOLS

SEPARATOR = " │ "
# The order sections are shortened in, least needed first; each step moves one
# section to its next shorter form (the last form of a section is kept).
SHRINK = (
    "ha",  # "leader term 12 │ also m2, m3" -> "leader term 12"
    "state",  # the state dir beside "another shell: corral nodes": dropped
    "quit",  # "q ends the demo and its programs" -> "q ends the demo"
    "nodes",  # labels and zero counts go: "● 3 alive"
    "procs",  # "processes 4 running  0 ended  0 failed" -> "4 running  0 ended  0 failed"
    "address",  # "master 127.0.0.1:7070" -> "127.0.0.1:7070"
    "quit",  # dropped
    "procs",  # "4 running" (+ "N failed" when there are any)
    "address",  # dropped
    "reach",  # "another shell: CMD" -> "CMD"
    "brand",  # " corral demo " -> " corral "
    "reach",  # "state DIR" (when CMD names it), else dropped
    "reach",  # dropped
    "ha",  # "leader" alone
)


class ClusterHeader(Static):
    """Counts by state, the master's address and how to reach it, fitted to the width."""

    DEFAULT_CSS = """
    ClusterHeader { height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    counts: reactive[dict[str, int]] = reactive(dict)  # repaints only when a count moved
    address: reactive[str] = reactive("")
    reach: reactive[str] = reactive("")  # what another shell types: "corral nodes"
    demo: reactive[bool] = reactive(False)  # a demo: q ends it, workers and programs too
    state: reactive[str] = reactive("")  # the master's state dir, shown when there is room
    # Masters on etcd: (role, term or who leads, the other masters); all "" for one master.
    ha: reactive[tuple[str, str, str]] = reactive(("", "", ""))

    def on_mount(self) -> None:
        """The app says how to reach its master and whether it runs a demo (`CorralApp`)."""
        app = self.app
        self.reach = str(getattr(app, "reach", "") or "")
        self.demo = bool(getattr(app, "demo", False))
        config = getattr(getattr(app, "master", None), "config", None)
        self.state = str(getattr(config, "state_dir", "") or "")

    def render(self) -> Text:
        width = self.content_size.width or None
        return render_header(
            self.counts, self.address, width, self.reach, self.demo, self.state, self.ha
        )


def _brand(demo: bool) -> list[Text]:
    full = Text(" corral demo " if demo else " corral ", style="bold reverse")
    return [full, Text(" corral ", style="bold reverse")] if demo else [full]


def _nodes(counts: Mapping[str, int]) -> list[Text]:
    full = Text("nodes ")
    short = Text()
    for state in ("alive", "suspect", "lost"):
        n = counts.get(state, 0)
        style = NODE_STYLES[state] if n or state == "alive" else "dim"
        part = f"{NODE_SYMBOLS[state]} {n} {state}"
        full.append(("  " if state != "alive" else "") + part, style=style)
        if n or state == "alive":
            short.append(("  " if short else "") + part, style=style)
    return [full, short]


def _procs(counts: Mapping[str, int]) -> list[Text]:
    running, ended, failed = (counts.get(k, 0) for k in ("running", "ended", "failed"))
    counts_text = Text()
    counts_text.append(f"{running} running", style="green")
    counts_text.append(f"  {ended} ended")
    counts_text.append(f"  {failed} failed", style="bold red" if failed else "dim")
    short = Text()
    short.append(f"{running} running", style="green")
    if failed:
        short.append(f"  {failed} failed", style="bold red")
    return [Text("processes ") + counts_text, counts_text, short]


def _address(address: str) -> list[Text]:
    shown = Text(address or "not listening", style="bold" if address else "dim")
    return [Text("master ") + shown, shown, Text()]


def _reach(reach: str) -> list[Text]:
    if not reach:
        return [Text()]
    cmd = Text(reach, style="bold cyan")
    forms = [Text("another shell: ") + cmd, cmd]
    # "CORRAL_STATE_DIR=DIR corral nodes": the directory alone, if the command does not fit
    first = reach.split()[0]
    if first.startswith("CORRAL_STATE_DIR="):
        forms.append(Text("state ") + Text(first.partition("=")[2], style="bold cyan"))
    return [*forms, Text()]


def _ha(ha: tuple[str, str, str]) -> list[Text]:
    """This master's part among masters on etcd: its role, the term, the others."""
    role, term, others = ha
    if not role:
        return [Text()]
    style = {"leader": "bold green", "standby": "bold yellow"}.get(role, "bold red")
    head = Text(role, style=style)
    if term:
        head.append(f" {term}")
    full = head.copy()
    if others:
        full.append(f"{SEPARATOR}also {others}", style="dim")
    return [full, head, Text(role, style=style)]


def _quit(demo: bool) -> list[Text]:
    if not demo:
        return [Text()]
    return [
        Text("q ends the demo and its programs", style="dim"),
        Text("q ends the demo", style="dim"),
        Text(),
    ]


def render_header(
    counts: Mapping[str, int],
    address: str,
    width: int | None = None,
    reach: str = "",
    demo: bool = False,
    state: str = "",
    ha: tuple[str, str, str] = ("", "", ""),
) -> Text:
    """The header line, fitted to ``width`` cells (None: everything, at full length).

    ``reach`` is the command another shell runs to reach this master;
    ``demo`` says q ends the demo; ``state`` is the state dir, shown beside
    a plain ``corral nodes`` when there is room.
    """
    forms: dict[str, list[Text]] = {
        "brand": _brand(demo),
        "nodes": _nodes(counts),
        "procs": _procs(counts),
        "address": _address(address),
        "reach": _reach(reach),
        "state": [Text(f"state {state}", style="dim"), Text()]
        if state and state not in reach
        else [Text()],
        "quit": _quit(demo),
        "ha": _ha(ha),
    }
    level = dict.fromkeys(forms, 0)

    def line() -> Text:
        text = Text()
        text.append_text(forms["brand"][level["brand"]])
        keys = ("ha", "nodes", "procs", "address", "reach", "state")
        parts = [forms[k][level[k]] for k in keys]
        parts.append(forms["quit"][level["quit"]])
        for i, part in enumerate(p for p in parts if p):
            text.append(" " if i == 0 else SEPARATOR, style="dim")
            text.append_text(part)
        return text

    text = line()
    for section in SHRINK:
        if width is None or text.cell_len <= width:
            break
        level[section] = min(level[section] + 1, len(forms[section]) - 1)
        text = line()
    if width is not None and text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text
