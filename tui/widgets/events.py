"""The events screen (``v`` or ``:events``): the master's event log, live, newest first.

`EventsPane` draws only the lines on screen (a `ScrollView`), so a thousand
events cost what twenty do.  New events go on top; while the operator is
scrolled away from the top the view stays put and the pane's subtitle counts
what arrived ("12 new ↑"), until they scroll back up.  ``/`` filters by text
(every word must appear in the time, kind, node or message); esc clears it.
Colours by severity: lost, refused, failed red; suspect and stopped yellow;
joined and back green.

The backfill is the master's ring of recent events (`Cluster.events`, which
the master seeds from ``events.log`` at start, so a restarted master still
shows what happened before).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Input

from corral.master.model import Change, Cluster, Event

RED = {"node.lost", "node.refused", "app.deploy_failed"}
YELLOW = {"node.suspect"}
GREEN = {"node.joined", "node.back"}
CYAN = {"app.deployed", "app.removed"}
DIM = {"node.left"}
KIND_WIDTH = 17  # "app.deploy_failed"


def ended_ok(message: str) -> bool | None:
    """For a ``proc.ended`` message: True for exit 0, None for a stop (INT/TERM), else False."""
    # The model writes "NODE:PID REASON: COMMAND"; the reason is the worker's words.
    _, _, rest = message.partition(" ")
    if rest.startswith("exited 0:"):
        return True
    if rest.startswith(("killed by SIGINT:", "killed by SIGTERM:")):
        return None
    return False


def severity(ev: Event) -> str:
    """The style an event is drawn in."""
    kind = ev.kind
    if kind in RED:
        return "bold red"
    if kind in YELLOW:
        return "yellow"
    if kind in GREEN:
        return "green"
    if kind in CYAN:
        return "cyan"
    if kind in DIM:
        return "dim"
    if kind == "proc.ended":
        ok = ended_ok(ev.message)
        return "" if ok else ("yellow" if ok is None else "red")
    return ""


def event_text(ev: Event) -> str:
    """The searchable words of one event (what its line says)."""
    return f"{time.strftime('%H:%M:%S', time.localtime(ev.ts))} {ev.kind} {ev.node} {ev.message}"


def event_line(ev: Event) -> Text:
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(ev.ts))
    line = Text(stamp + "  ", style="dim")
    style = severity(ev)
    line.append(ev.kind.ljust(KIND_WIDTH), style=style or "bold")
    line.append("  ")
    line.append(ev.message, style=style if style in ("bold red", "red") else "")
    return line


def matches(ev: Event, words: list[str]) -> bool:
    text = event_text(ev).lower()
    return all(w in text for w in words)


class EventsPane(ScrollView, can_focus=True):
    """Events, newest on top; `add` puts new ones in without moving what is read."""

    BINDINGS = [
        Binding("up,k", "scroll_up", "Up", show=False),
        Binding("down,j", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,g", "scroll_home", "Newest", tooltip="Back to the newest event"),
        Binding("end,G", "scroll_end", "Oldest", show=False),
    ]

    DEFAULT_CSS = """
    EventsPane {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, limit: int = 1000, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.events: deque[Event] = deque(maxlen=limit)  # oldest first
        self.shown: list[Event] = []  # newest first, filtered
        self.query_text = ""
        self.new_count = 0
        self._lines: dict[Event, Strip] = {}  # drawn lines (for this width)
        self._width = 0

    # --- content ----------------------------------------------------------------
    def add(self, events: Iterable[Event]) -> None:
        """New events (oldest first); the view stays on what it showed."""
        limit = self.events.maxlen or 0
        fresh = list(events)[-limit:]
        if not fresh:
            return
        over = len(self.events) + len(fresh) - limit  # the oldest go
        gone = {self.events[i] for i in range(min(over, len(self.events)))} if over > 0 else set()
        self.events.extend(fresh)
        words = self._words()
        new = [ev for ev in reversed(fresh) if matches(ev, words)]
        self.shown[:0] = new
        if gone:
            self.shown = [ev for ev in self.shown if ev not in gone]
            for ev in gone:
                self._lines.pop(ev, None)
        self._resize()
        if new and self.scroll_y > 0:  # scrolled away: keep the same lines in view
            self.new_count += len(new)
            self.scroll_to(y=self.scroll_y + len(new), animate=False, force=True, immediate=True)
        self._subtitle()
        self.refresh()

    def replace(self, events: Iterable[Event]) -> None:
        """All the events anew (oldest first): the master's ring was replaced whole."""
        self.events.clear()
        self.events.extend(events)
        self._lines.clear()
        self.set_query(self.query_text)

    def set_query(self, text: str) -> None:
        self.query_text = text
        words = self._words()
        self.shown = [ev for ev in reversed(self.events) if matches(ev, words)]
        self.new_count = 0
        self._resize()
        self.scroll_to(y=0, animate=False, force=True, immediate=True)
        self._subtitle()
        self.refresh()

    def _words(self) -> list[str]:
        return self.query_text.lower().split()

    def _resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.shown))

    def _subtitle(self) -> None:
        parts = []
        if self.query_text:
            parts.append(f"filter: {self.query_text} ({len(self.shown)} of {len(self.events)})")
        if self.new_count:
            parts.append(f"{self.new_count} new ↑")
        self.border_subtitle = "  ".join(parts)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if round(new) <= 0 and self.new_count:
            self.new_count = 0
            self._subtitle()

    def on_resize(self) -> None:
        self._resize()

    # --- drawing ----------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width != self._width:
            self._width, self._lines = width, {}
        index = round(self.scroll_y) + y
        base = self.rich_style
        if index >= len(self.shown):
            if not self.shown and y == 0:
                note = "no events match the filter" if self.query_text else "no events yet"
                return Strip([Segment(note.ljust(width), base + Style(dim=True))], width)
            return Strip.blank(width, base)
        ev = self.shown[index]
        strip = self._lines.get(ev)
        if strip is None:
            text = event_line(ev)
            text.truncate(width, overflow="ellipsis", pad=True)
            segments = list(Segment.apply_style(text.render(self.app.console), base))
            strip = Strip(segments).crop_extend(0, width, base)
            self._lines[ev] = strip
        return strip

    # --- keys -----------------------------------------------------------------------
    def action_scroll_up(self) -> None:
        self.scroll_to(y=self.scroll_y - 1, animate=False, force=True)

    def action_scroll_down(self) -> None:
        self.scroll_to(y=self.scroll_y + 1, animate=False, force=True)

    def action_page_up(self) -> None:
        self.scroll_to(y=self.scroll_y - self.size.height, animate=False, force=True)

    def action_page_down(self) -> None:
        self.scroll_to(y=self.scroll_y + self.size.height, animate=False, force=True)

    def action_scroll_home(self) -> None:
        self.scroll_to(y=0, animate=False, force=True)

    def action_scroll_end(self) -> None:
        self.scroll_to(y=self.max_scroll_y, animate=False, force=True)


class EventsScreen(Screen[None]):
    """The event log on its own screen; esc goes back to the dashboard."""

    BINDINGS = [
        Binding("slash", "filter", "Filter", tooltip="Filter events by text"),
        Binding("escape,q", "back", "Back", tooltip="Clear the filter, else back to the dashboard"),
    ]

    def __init__(self, cluster: Cluster, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.cluster = cluster
        self.clock = clock
        self._pending: list[Event] = []
        self._scheduled = False
        self._reload = False  # the next flush redraws the whole ring
        self._unsubscribe: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: words that every event shown has", id="events-filter")
        yield EventsPane(limit=self.cluster.events.maxlen or 1000, id="events")
        yield Footer()

    def on_mount(self) -> None:
        pane = self.pane
        pane.border_title = "Events (newest first)"
        pane.add(self.cluster.events)
        self._unsubscribe = self.cluster.subscribe(self._on_change)
        self.query_one("#events-filter").display = False
        pane.focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    @property
    def pane(self) -> EventsPane:
        return self.query_one(EventsPane)

    def _on_change(self, change: Change) -> None:
        if change.history:  # a new leader read the cluster's recent events back
            self._reload, self._pending = True, []
        elif not change.events:
            return
        else:
            self._pending.extend(change.events)
        if not self._scheduled:
            self._scheduled = True
            self.set_timer(0.1, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        events, self._pending = self._pending, []
        if self._reload:  # the ring holds the pending ones too
            self._reload = False
            self.pane.replace(self.cluster.events)
        else:
            self.pane.add(events)

    def action_filter(self) -> None:
        bar = self.query_one("#events-filter", Input)
        bar.display = True
        bar.focus()

    @on(Input.Changed, "#events-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.pane.set_query(event.value)

    @on(Input.Submitted, "#events-filter")
    def _filter_done(self) -> None:
        bar = self.query_one("#events-filter", Input)
        bar.display = bool(bar.value)
        self.pane.focus()

    def action_back(self) -> None:
        bar = self.query_one("#events-filter", Input)
        if bar.value:
            bar.value = ""
            bar.display = False
            self.pane.focus()
            return
        if bar.has_focus:
            bar.display = False
            self.pane.focus()
            return
        self.dismiss()
