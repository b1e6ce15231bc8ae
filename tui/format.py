"""Pure text formatting for the dashboard: sizes, durations, states, sparklines.

Every function here is a pure function of its arguments (times come in as
numbers, never from the clock), so rows render the same in snapshots.
Sizes and durations are spelled as everywhere else (`master.text`, whose
`human_bytes` and `duration` this module passes on to the panes).
"""

from __future__ import annotations

import time

from rich.text import Text

from corral.master.model import NodeView, ProcView
from corral.master.text import duration as duration  # re-exported for the panes
from corral.master.text import human_bytes as human_bytes
from corral.tui.tally import FAILED, stopped, view_kind

NODE_SYMBOLS = {"alive": "●", "suspect": "◐", "lost": "✕", "left": "○"}
NODE_STYLES = {"alive": "green", "suspect": "bold yellow", "lost": "bold red", "left": "dim"}
PROC_STYLES = {
    "running": "green",
    "sleeping": "green",
    "stopped": "yellow",
    "zombie": "magenta",
    "lost": "bold red",
    "unknown": "yellow",
    "killed": "red",
}
_BARS = "▁▂▃▄▅▆▇█"


def clock_time(ts: float, now: float) -> str:
    """Local wall time of ``ts`` today, else its date (8 columns at most)."""
    local = time.localtime(ts)
    if time.localtime(now)[:3] == local[:3]:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%b %d", local)


def sparkline(values: tuple[float, ...], width: int = 12, top: float = 100.0) -> str:
    """Unicode bars of the last ``width * k`` samples, each bar the max of k."""
    if not values:
        return " " * width
    step = max(1, -(-len(values) // width))  # ceil: squeeze a minute into `width` bars
    buckets = [max(values[i : i + step]) for i in range(0, len(values), step)][-width:]
    bars = "".join(_BARS[min(7, int(v / top * 8))] if v > 0 else " " for v in buckets)
    return bars.rjust(width)


def node_state(view: NodeView) -> Text:
    """The state with a symbol, so it reads without colour."""
    return Text(f"{NODE_SYMBOLS[view.state]} {view.state}", style=NODE_STYLES[view.state])


def node_name(view: NodeView) -> Text:
    return Text(view.name, style=NODE_STYLES[view.state] if view.state != "alive" else "bold")


def beat_age(view: NodeView, now: float) -> Text:
    """Whole seconds: beats come every second, so tenths would only flicker, and
    every beat of every node on screen would cost a repaint."""
    age = view.beat_age(now)
    if age < 60:
        return Text(f"{int(age)}s", style=style_of_age(view), justify="right")
    return Text(duration(age), style=style_of_age(view), justify="right")


def style_of_age(view: NodeView) -> str:
    return "" if view.state == "alive" else NODE_STYLES[view.state]


def cpu_cell(view: NodeView) -> Text:
    text = Text(f"{view.cpu_percent:5.1f}% ", justify="left")
    text.append(sparkline(view.cpu_history), style="cyan")
    return text


def mem_cell(view: NodeView) -> Text:
    return Text(f"{human_bytes(view.mem_used)}/{human_bytes(view.mem_total)}", justify="right")


def proc_state(view: ProcView, countdown: int | None = None) -> Text:
    """The state cell; an escalation in progress shows its countdown instead."""
    if countdown is not None and view.alive:
        return Text(f"stopping {countdown}s", style="bold yellow")
    style = PROC_STYLES.get(view.state, "")
    if view.state in ("exited", "killed"):  # red only when it failed (see `tally`)
        style = "red" if view_kind(view) == FAILED else "dim"
    return Text(view.state, style=style)


def reason(view: ProcView) -> Text:
    """The end reason; the state cell already says "killed", so the signal comes first.

    Red when the process failed; a graceful stop reads "SIGINT (stopped)".
    """
    failed = not view.alive and view.state != "lost" and view_kind(view) == FAILED
    text = view.reason.removeprefix("killed by ") if view.state == "killed" else view.reason
    if stopped(view):
        text += " (stopped)"
    return Text(text, style="red" if failed else "dim")


def right(text: str) -> Text:
    return Text(text, justify="right")
