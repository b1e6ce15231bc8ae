"""The log pane: the selected process's log, following live.

Pieces from the source (``Master.follow``) are split into lines into a ring
buffer; one `write_lines` per tick (at most one each `TICK`) puts them on
screen, so a chatty program costs one repaint a tick.  A quiet log's line
goes out at once: the tick only holds back lines that come less than `TICK`
after the last write, so any line is on screen within TICK and a frame.
``ingested`` counts every line taken in (the ring keeps only the last ones).
Scrolling up pauses following (new lines are kept but the view stays put);
End resumes it.
"""

from __future__ import annotations

import codecs
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable

from textual import work
from textual.binding import Binding
from textual.widgets import Log

from corral.master.control import LogPiece
from corral.master.model import ProcView

FollowSource = Callable[..., AsyncIterator[LogPiece]]
TICK = 0.05


class LogPane(Log):
    """Shows and follows one process's log; ``source`` yields its pieces."""

    BINDINGS = [
        Binding("end", "follow", "Follow", tooltip="Follow the log again (scrolling up pauses it)"),
    ]

    def __init__(self, tail: int = 200, max_lines: int = 10_000, **kwargs: object) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, **kwargs)  # type: ignore[arg-type]
        self.tail = tail
        self.source: FollowSource | None = None
        self.key: str | None = None
        self.proc: ProcView | None = None
        self._pending: deque[str] = deque(maxlen=max_lines)
        self._flush_scheduled = False
        self._flushed_at = 0.0  # monotonic time of the last write_lines
        self.ingested = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = ""
        self._eof = False
        self._ended = False

    def on_mount(self) -> None:
        self.border_title = "Log"

    # --- attributes down ------------------------------------------------
    def show(self, proc: ProcView | None) -> None:
        """Start showing ``proc``'s log (or nothing), dropping the previous one."""
        self.key = proc.key if proc else None
        self.proc = proc
        self.clear()
        self._pending.clear()
        self._decoder.reset()
        self._partial, self._eof, self._ended = "", False, False
        self._title()
        if proc is None:
            self.workers.cancel_group(self, "follow")
        elif self.source is not None:
            self._follow(proc.key)

    def update_proc(self, proc: ProcView) -> None:
        """A newer snapshot of the followed process (its end reason may be known now)."""
        if proc.key == self.key:
            self.proc = proc
            self._title()
            self._maybe_end()

    def feed(self, lines: Iterable[str]) -> None:
        """Queue whole lines for the next tick (at once, if the last was a TICK ago)."""
        lines = list(lines)
        self.ingested += len(lines)
        self._pending.extend(lines)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            wait = self._flushed_at + TICK - time.monotonic()
            if wait > 0:
                self.set_timer(wait, self._flush)
            else:
                self.call_later(self._flush)

    # --- following ---------------------------------------------------------
    @work(exclusive=True, group="follow", exit_on_error=False)
    async def _follow(self, key: str) -> None:
        assert self.source is not None
        try:
            async for piece in self.source(key, tail=self.tail):
                if key != self.key:
                    return
                self._ingest(piece)
        except Exception as e:  # shown where the operator looks: in the pane
            if key == self.key:
                self.feed([f"── log unavailable: {e or type(e).__name__} ──"])

    def _ingest(self, piece: LogPiece) -> None:
        text = self._partial + self._decoder.decode(piece.data, final=piece.eof)
        lines = text.split("\n")
        self._partial = "" if piece.eof else lines.pop()
        if piece.eof and lines and lines[-1] == "":
            lines.pop()
        self.feed(lines)
        if piece.eof:
            self._eof = True
            self._maybe_end()

    def _maybe_end(self) -> None:
        """The end marker goes in once the log is drained and the reason is known."""
        if self._eof and not self._ended and self.proc is not None and not self.proc.alive:
            self._ended = True
            why = self.proc.reason or self.proc.state
            self.feed([f"── {self.proc.key} ended: {why} ──"])

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flushed_at = time.monotonic()
        if self._pending:
            lines = list(self._pending)
            self._pending.clear()
            self.write_lines(lines)
        self._title()

    # --- following state -------------------------------------------------------
    @property
    def following(self) -> bool:
        return self.is_vertical_scroll_end

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._title()

    def action_follow(self) -> None:
        self.scroll_end(animate=False, immediate=True)
        self._title()

    def _title(self) -> None:
        if self.proc is None:
            self.border_title, self.border_subtitle = "Log", ""
            return
        self.border_title = f"Log · {self.proc.key} · {self.proc.command}"
        if self._ended:
            self.border_subtitle = "ended"
        elif self.following:
            self.border_subtitle = "following"
        else:
            self.border_subtitle = "paused · End to follow"
