"""The log pane: a window of pages onto a process's whole log, following its end.

The worker keeps the log; the pane keeps a *window* of at most `MAX_LINES`
lines (and `MAX_BYTES` bytes) of it, named by byte offsets: ``_top`` (where
its first line starts) and ``_end`` (after its last whole line).  It opens
on the last `TAIL` lines through ``source`` (``Master.follow``), whose
stream then appends to the window while the window is *attached* to the
log's end.  Scrolling near the window's top fetches the page before it
through ``pages`` (``Master.read_log``); Home fetches the first page; a
detached window fetches the page after it as the view nears its bottom;
End (or F from anywhere) goes back to the end and follows it.  Pages
pushed out at the far side are dropped, so memory stays bounded whatever
the log's size.  Lines are kept as bytes and decoded only when drawn.

Following is a state of its own, not "the view is at the bottom": a
layout change (the command line opening under the pane) does not stop it;
scrolling up does, and End resumes it.

A chatty program costs one repaint a tick: what the stream brings between
ticks is taken in at once and drawn at the next tick (at most one each
`TICK`; a quiet log's line goes out at once).  A repaint costs the same
whatever it brings (every row of the pane moves, and Textual redraws the
screen's panes around it), so a *trickle* (the last repaint brought fewer
than `FAST` lines) is repainted at most once each `TRICKLE`: a program
printing 5 lines a second costs 2 repaints a second, not 5 (a line after
a quiet second is still drawn at once).  The virtual
height changes without a layout of the whole screen unless a scrollbar
comes or goes (a layout of the screen at every line was most of what
following used to cost).

``/`` searches (case-insensitive), highlighting matches; ``n``/``N`` go to
the next/previous match, fetching pages beyond the window until one is
found or the log ends.  ``w`` wraps long lines.  ``S`` saves the whole
log, read from the worker page by page, to a local file.  The last line
shows before its newline comes.

Merged: ``show_merged`` follows several processes at once, each line
prefixed by its ``NODE:PID`` in that process's colour, in arrival order
(a ring of the last `MAX_LINES` lines; no paging).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from corral.master.control import LogPiece
from corral.master.model import ProcView
from corral.tui.widgets.log_prompt import LogPrompt

FollowSource = Callable[..., AsyncIterator[LogPiece]]
PageSource = Callable[..., Awaitable[LogPiece]]
TICK = 0.05  # at most one repaint each TICK while lines pour in
TRICKLE = 0.5  # ... and each TRICKLE while they trickle
FAST = 8  # lines a repaint must bring for the log to count as pouring
QUIET = 1.0  # after this long without a line, the next one is drawn at once
TAIL = 200  # lines the pane opens with
MERGED_TAIL = 20  # lines of each log a merged view opens with
PAGE = 64 * 1024  # bytes a page fetch asks for
SAVE_PAGE = 256 * 1024
PREFETCH = 3  # screens from the window's edge at which the next page is fetched
MAX_LINES = 20_000
MAX_BYTES = 8 << 20
CACHE = 96  # drawn lines kept: few, so that pouring lines die young (no full GCs)
COLOURS = (
    "#5fafff",
    "#87d75f",
    "#ffaf5f",
    "#d787ff",
    "#5fd7d7",
    "#ff8787",
    "#d7d75f",
    "#afafff",
)
MATCH = Style(bgcolor="#8a7a00", color="#ffffff")
CURRENT = Style(bgcolor="#ff8700", color="#000000", bold=True)
NOTE = Style(dim=True, italic=True)
_CONTROL = {c: "\ufffd" for c in [*range(0, 9), *range(10, 32), 127]}


def clean(raw: bytes) -> str:
    """A log line as drawn: decoded, tabs expanded, control bytes visible."""
    text = raw.decode("utf-8", "replace")
    if "\t" in text:
        text = text.expandtabs(8)
    if not text.isprintable():
        text = text.translate(_CONTROL)
    return text


class LogPane(ScrollView, can_focus=True):
    """Shows one process's log (or several, merged) and follows it."""

    BINDINGS = [
        Binding("end", "follow", "Follow", tooltip="Go to the end and follow the log"),
        Binding("home", "home", "Top", tooltip="Line 1 of the log (fetched from the worker)"),
        Binding("slash", "search", "Search", tooltip="Search the log; n / N for next / previous"),
        Binding("n", "next_match", "Next", show=False, tooltip="Next match of the search"),
        Binding("N", "previous_match", "Prev", show=False, tooltip="Previous match"),
        Binding("w", "wrap", "Wrap", tooltip="Wrap long lines, or cut them (scroll sideways)"),
        Binding("S,ctrl+s", "save", "Save", tooltip="Save the whole log to a local file"),
        Binding("escape", "clear_search", "Clear", show=False, tooltip="Clear the search"),
    ]

    DEFAULT_CSS = """
    LogPane {
        background: $surface;
        color: $text;
        overflow-y: scroll;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(self, tail: int = TAIL, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tail = tail
        self.max_lines = max_lines
        self.source: FollowSource | None = None
        self.pages: PageSource | None = None
        self.key: str | None = None
        self.proc: ProcView | None = None
        self.merged: list[str] = []  # the keys of a merged view
        self.following = True
        self.wrap = False
        self.search_text = ""
        self.ingested = 0  # lines taken in from the streams
        self._gen = 0  # bumped by every show: a stale stream's pieces are dropped
        self._reset(0)
        self._flush_scheduled = False
        self._flushed_at = 0.0
        self._taken_at = 0.0  # when the streams last brought something
        self._flush_due = 0.0
        self._flush_token = 0  # only the latest planned repaint runs
        self._batch = 0  # lines the last repaint brought
        self._batch_start = 0
        self._eof = False
        self._ended = False
        self._busy = False  # a page fetch is under way
        self._base = Style()
        self._cache: dict[tuple[int, int], Strip] = {}
        self._row_starts: list[int] | None = None  # wrapped rows: where each line starts
        self._row_width = 0
        self._current: int | None = None  # the line number of the current match
        self._tag_styles: list[tuple[str, Style]] = []
        self._stream_end = 0  # the furthest byte the follow stream has shown us
        self._titles = ("", "")
        self._frame: tuple[int, int, int, int] | None = None

    # --- the window -------------------------------------------------------------
    def _reset(self, top: int) -> None:
        self._lines: list[bytes] = []
        self._tags: list[int] = []
        self._top = top
        self._end = top
        self._bytes = 0
        self._partial = b""
        self._partials: dict[int, bytes] = {}
        self._notes: list[str] = []
        self._first = 0  # the number of the window's first line (keys the drawing cache)
        self._widest = 0
        self._attached = True
        self._row_starts = None
        if hasattr(self, "_cache"):
            self._cache.clear()

    @property
    def lines(self) -> list[str]:
        """Every line the window holds, as drawn (without merged prefixes)."""
        return [self._text(i) for i in range(self._count())]

    @property
    def line_count(self) -> int:
        return self._count()

    @property
    def window(self) -> tuple[int, int]:
        """The byte range of the log the window holds, whole lines."""
        return self._top, self._end

    @property
    def attached(self) -> bool:
        return self._attached

    def _extras(self) -> list[str]:
        if not self._attached:
            return []
        partial = [clean(self._partial)] if self._partial else []
        return partial + self._notes

    def _count(self) -> int:
        return len(self._lines) + (len(self._extras()) if self._attached else 0)

    def _text(self, i: int) -> str:
        if i < len(self._lines):
            return clean(self._lines[i])
        return self._extras()[i - len(self._lines)]

    def source_of(self, i: int) -> str | None:
        """The key of the process line ``i`` came from."""
        if self._tags and i < len(self._tags):
            return self.merged[self._tags[i]]
        return self.key

    def _prefix(self, i: int) -> tuple[str, Style] | None:
        if self._tags and i < len(self._tags):
            return self._tag_styles[self._tags[i]]
        return None

    # --- showing -------------------------------------------------------------------
    def show(self, proc: ProcView | None) -> None:
        """Start showing ``proc``'s log (or nothing), dropping what was shown."""
        self._start(proc.key if proc else None)
        self.proc = proc
        self._title()
        if proc is not None and self.source is not None:
            self._follow(proc.key, self._gen, -1)
        self._redraw()

    def show_merged(self, procs: Sequence[ProcView]) -> None:
        """Follow several processes' logs in one pane, each line prefixed by its key."""
        if len(procs) == 1:
            self.show(procs[0])
            return
        self._start(None)
        self.merged = [p.key for p in procs]
        width = max((len(k) for k in self.merged), default=0)
        self._tag_styles = [
            (f"{k:<{width}} ", Style(color=COLOURS[i % len(COLOURS)], bold=True))
            for i, k in enumerate(self.merged)
        ]
        self._title()
        if self.source is not None:
            for tag, key in enumerate(self.merged):
                self._follow(key, self._gen, tag)
        self._redraw()

    def _start(self, key: str | None) -> None:
        self.workers.cancel_group(self, "follow")
        self.workers.cancel_group(self, "page")
        self._gen += 1
        self.key, self.proc, self.merged = key, None, []
        self._tag_styles = []
        self._reset(0)
        self._eof = self._ended = self._busy = False
        self._current = None
        self._stream_end = 0
        self.following = True

    def update_proc(self, proc: ProcView) -> None:
        """A newer snapshot of the followed process (its end reason may be known now)."""
        if proc.key == self.key:
            self.proc = proc
            self._title()
            self._maybe_end()

    def note(self, text: str) -> None:
        """A line of the pane's own at the end of the log (an end marker, an error)."""
        self._notes.append(text)
        self._schedule()

    # --- following -------------------------------------------------------------------
    @work(group="follow", exit_on_error=False)
    async def _follow(self, key: str, gen: int, tag: int) -> None:
        assert self.source is not None
        tail = self.tail if tag < 0 else MERGED_TAIL
        try:
            async for piece in self.source(key, tail=tail):
                if gen != self._gen:
                    return
                if tag < 0:
                    self._piece(piece)
                else:
                    self._merged_piece(tag, piece)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # shown where the operator looks: in the pane
            if gen == self._gen:
                whose = f"{key}: " if tag >= 0 else ""
                self.note(f"── {whose}log unavailable: {e or type(e).__name__} ──")

    def _piece(self, piece: LogPiece) -> None:
        """A piece of the followed log's stream: onto the window when attached."""
        first = self._stream_end == 0 and not self._lines and not self._partial
        if first:
            self._reset(piece.offset)
        end = piece.offset + len(piece.data)
        self._stream_end = max(self._stream_end, end)
        if self._attached:
            have = self._end + len(self._partial)
            data = piece.data
            if piece.offset < have:
                data = data[have - piece.offset :]  # already read through a page
            if piece.offset > have:
                self._detach()  # a gap: read it from the worker (End does)
                if self.following:
                    self._to_end()
            elif data:
                if not self.following and self._full():
                    self._detach()  # the view stays put; End comes back
                else:
                    self._append(data)
                    if self.following and (n := self._excess()):
                        self._drop_top(n)
        if piece.eof:
            self._eof = True
            self._maybe_end()
        self._schedule()

    def _merged_piece(self, tag: int, piece: LogPiece) -> None:
        buf = self._partials.get(tag, b"") + piece.data
        parts = buf.split(b"\n")
        rest = parts.pop()
        if piece.eof and rest:
            parts.append(rest)
            rest = b""
        self._partials[tag] = rest
        self.ingested += len(parts)
        self._lines.extend(parts)
        self._tags.extend([tag] * len(parts))
        self._took(parts, len(buf) - len(rest))
        if n := self._excess():  # a ring: the oldest lines go, the view stays on its lines
            shift = 0 if self.following else self._row_of(n)
            self._drop_top(n)
            if shift:
                self.scroll_to(y=max(0, self.scroll_y - shift), animate=False, immediate=True)
        self._schedule()

    def _append(self, data: bytes) -> None:
        buf = self._partial + data
        parts = buf.split(b"\n")
        self._partial = parts.pop()
        self.ingested += len(parts)
        self._lines.extend(parts)
        self._end += len(buf) - len(self._partial)
        self._took(parts, len(buf) - len(self._partial))

    def _took(self, parts: list[bytes], nbytes: int) -> None:
        self._bytes += nbytes
        if parts:
            widest = max(map(len, parts))
            if widest > self._widest:
                self._widest = widest
        self._row_starts = None

    def _full(self) -> bool:
        return len(self._lines) >= self.max_lines or self._bytes >= MAX_BYTES

    def _excess(self) -> int:
        """How many lines to drop to bring the window within its bounds."""
        over = len(self._lines) - self.max_lines
        if over > 0:
            return over
        if self._bytes > MAX_BYTES:
            return max(1, len(self._lines) // 10)
        return 0

    def _drop_top(self, n: int) -> None:
        gone = self._lines[:n]
        del self._lines[:n]
        if self._tags:
            del self._tags[:n]
        size = sum(map(len, gone)) + len(gone)
        self._top += size
        self._bytes -= size
        self._first += n
        self._row_starts = None
        if self._current is not None and self._current < self._first:
            self._current = None

    def _drop_bottom(self, n: int) -> None:
        if n <= 0:
            return
        gone = self._lines[-n:]
        del self._lines[-n:]
        size = sum(map(len, gone)) + len(gone)
        self._end -= size
        self._bytes -= size
        self._row_starts = None
        self._detach()

    def _detach(self) -> None:
        self._attached = False
        self._partial = b""
        self._row_starts = None

    def _maybe_end(self) -> None:
        """The end marker goes in once the log is drained and the reason is known."""
        if self._eof and not self._ended and self.proc is not None and not self.proc.alive:
            self._ended = True
            why = self.proc.reason or self.proc.state
            self.note(f"── {self.proc.key} ended: {why} ──")

    def _schedule(self) -> None:
        """One repaint a tick (TICK pouring, TRICKLE trickling); at once after a quiet spell.

        A repaint planned for a trickle comes sooner when the lines start to pour.
        """
        now = time.monotonic()
        quiet = now - self._taken_at > QUIET
        self._taken_at = now
        pouring = self._batch >= FAST or self.ingested - self._batch_start >= FAST
        due = now if quiet else self._flushed_at + (TICK if pouring else TRICKLE)
        if self._flush_scheduled and self._flush_due <= due:
            return
        self._flush_scheduled, self._flush_due = True, due
        self._flush_token += 1
        token = self._flush_token
        if due > now:
            self.set_timer(due - now, lambda: self._flush_if(token))
        else:
            self.call_later(self._flush_if, token)

    def _flush_if(self, token: int) -> None:
        if token == self._flush_token:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flushed_at = time.monotonic()
        self._batch, self._batch_start = self.ingested - self._batch_start, self.ingested
        self._redraw()

    def _redraw(self) -> None:
        """The virtual size from the window; to the end when following; repaint."""
        self._set_virtual(Size(self._virtual_width(), self._rows()))
        if self.following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.refresh()
        self._title()

    def _set_virtual(self, size: Size) -> None:
        """A new virtual size without a layout of the screen, unless a scrollbar comes or goes."""
        if size == self.virtual_size:
            return
        bars = (self.show_vertical_scrollbar, self.show_horizontal_scrollbar)
        self.set_reactive(Widget.virtual_size, size)
        if not self.is_mounted or not self.container_size:
            self.refresh(layout=True)
            return
        self._scroll_update(size)
        if (self.show_vertical_scrollbar, self.show_horizontal_scrollbar) != bars:
            self.refresh(layout=True)

    def on_resize(self) -> None:
        self._row_starts = None
        self._redraw()

    # --- rows --------------------------------------------------------------------------
    def _width(self) -> int:
        return max(1, self.scrollable_content_region.width)

    def _prefix_width(self) -> int:
        return len(self._tag_styles[0][0]) if self._tag_styles else 0

    def _virtual_width(self) -> int:
        if self.wrap:
            return self._width()
        extra = max((cell_len(t) for t in self._extras()), default=0)
        return self._prefix_width() + max(self._widest, extra)

    def _starts(self) -> list[int]:
        """Wrapped: the first row of each line (and the total at the end)."""
        width = self._width()
        if self._row_starts is None or self._row_width != width:
            starts, row, pre = [], 0, self._prefix_width()
            for i in range(self._count()):
                starts.append(row)
                raw = self._lines[i] if i < len(self._lines) else None
                if raw is not None and raw.isascii() and b"\t" not in raw:
                    cells = len(raw)
                else:
                    cells = cell_len(self._text(i))
                row += max(1, -(-(cells + pre) // width))
            starts.append(row)
            self._row_starts, self._row_width = starts, width
        return self._row_starts

    def _rows(self) -> int:
        return self._starts()[-1] if self.wrap else self._count()

    def _row_of(self, i: int) -> int:
        return self._starts()[min(i, self._count())] if self.wrap else i

    def _line_at_row(self, row: int) -> tuple[int, int]:
        """(line index, row within the line) of virtual row ``row``."""
        if not self.wrap:
            return row, 0
        starts = self._starts()
        i = bisect.bisect_right(starts, row) - 1
        return i, row - starts[i] if i >= 0 else 0

    def top_line(self) -> int:
        """The index in the window of the line at the top of the view."""
        return self._line_at_row(round(self.scroll_y))[0]

    def visible_lines(self) -> list[str]:
        """The lines (at least partly) in view, as text without prefixes."""
        first = self.top_line()
        last = self._line_at_row(round(self.scroll_y) + self.scrollable_content_region.height - 1)
        return [self._text(i) for i in range(first, min(last[0] + 1, self._count()))]

    # --- drawing -----------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        # What every line needs, once a frame rather than once a line.
        base = self.rich_style
        if base != self._base:
            self._base = base
            self._cache.clear()
        x, y = self.scroll_offset
        self._frame = (self._width(), x, y, self._count())
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        width, x, top, count = self._frame or (
            self._width(),
            *self.scroll_offset,
            self._count(),
        )
        i, part = self._line_at_row(top + y)
        if i < 0 or i >= count:
            return Strip.blank(width, self._base)
        strip = self._strip(i)
        start = part * width if self.wrap else x
        return strip.crop_extend(start, start + width, self._base)

    def _strip(self, i: int) -> Strip:
        """Line ``i`` drawn whole: prefix, text, matches highlighted."""
        number = self._first + i
        key = (number, 0)
        cached = self._cache.get(key) if i < len(self._lines) else None
        if cached is not None:
            return cached
        base = self._base
        segments: list[Segment] = []
        prefix = self._prefix(i)
        if prefix is not None:
            segments.append(Segment(prefix[0], base + prefix[1]))
        text = self._text(i)
        if i - len(self._lines) >= (1 if self._partial else 0):  # the pane's own notes
            segments.append(Segment(text, base + NOTE))
        else:
            segments.extend(self._highlighted(text, number == self._current))
        strip = Strip(segments)
        if i < len(self._lines):
            if len(self._cache) >= CACHE:
                self._cache.clear()
            self._cache[key] = strip
        return strip

    def _highlighted(self, text: str, current: bool) -> list[Segment]:
        base, query = self._base, self.search_text
        if not query:
            return [Segment(text, base)]
        lower = text.lower()
        if len(lower) != len(text):
            return [Segment(text, base)]
        out, pos, style = [], 0, base + (CURRENT if current else MATCH)
        while (hit := lower.find(query, pos)) >= 0:
            if hit > pos:
                out.append(Segment(text[pos:hit], base))
            out.append(Segment(text[hit : hit + len(query)], style))
            pos = hit + len(query)
        if pos < len(text):
            out.append(Segment(text[pos:], base))
        return out

    # --- scrolling, following -------------------------------------------------------
    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new < old and new < self.max_scroll_y and self.following:
            self.following = False  # scrolled up: the view stays put
        elif new > old and new >= self.max_scroll_y and self._attached and not self._busy:
            self.following = True  # scrolled down to the log's end: it follows again
        rows = PREFETCH * self.scrollable_content_region.height  # fetched before it shows
        if not self._busy and self.key is not None and self.pages is not None:
            if round(new) < rows and self._top > 0:
                self._page_before()
            elif not self._attached and round(new) > self.max_scroll_y - rows:
                self._page_after()
        self._title()

    def action_page_up(self) -> None:
        self._pause()
        super().action_page_up()

    def action_scroll_up(self) -> None:
        self._pause()
        super().action_scroll_up()

    def _pause(self) -> None:
        """Stop following before an upward scroll starts: it animates, and a line
        arriving meanwhile would otherwise take the view back to the end."""
        if self.following and self.scroll_y > 0:
            self.following = False
            self._title()

    def action_follow(self) -> None:
        """Go to the log's end (fetching it when the window is elsewhere) and follow."""
        self.following = True
        if self._attached:
            self._redraw()
        else:
            self._to_end()

    def resume(self) -> None:
        """After the layout moved (the command line closed): back to the end if following."""
        if self.following:
            self._redraw()

    def action_home(self) -> None:
        self.following = False
        if self._top == 0 or self.key is None or self.pages is None:
            self.scroll_to(y=0, animate=False, immediate=True)
            self._title()
        else:
            self._to_start()

    # --- pages ---------------------------------------------------------------------------
    async def _page(self, **kwargs: Any) -> LogPiece | None:
        """A page of the shown log; None (and a note) when it cannot be had."""
        if self.pages is None or self.key is None:
            return None
        try:
            return await self.pages(self.key, limit=PAGE, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.notify(f"log page unavailable: {e or type(e).__name__}", severity="warning")
            return None

    @work(group="page", exclusive=True, exit_on_error=False)
    async def _to_start(self) -> None:
        gen = self._gen
        self._busy = True
        try:
            piece = await self._page(offset=0)
            if piece is None or gen != self._gen:
                return
            self._load(piece)
            self._drop_bottom(self._excess())
            if self._attached:
                await self._catch_up(gen)
            self.following = False
            self._redraw()
            self.scroll_to(y=0, animate=False, immediate=True)
        finally:
            self._busy = False

    @work(group="page", exclusive=True, exit_on_error=False)
    async def _to_end(self) -> None:
        gen = self._gen
        self._busy = True
        try:
            piece = await self._page(before=1 << 62)
            if piece is None or gen != self._gen:
                return
            self._reset(piece.offset)
            self._attached = False
            self._take_forward(piece)
            await self._catch_up(gen)
            if n := self._excess():
                self._drop_top(n)
            self.following = True
            self._redraw()
        finally:
            self._busy = False

    def _load(self, piece: LogPiece) -> None:
        """The window becomes ``piece`` (a page read forwards)."""
        self._reset(piece.offset)
        self._attached = False
        self._take_forward(piece)

    def _take_forward(self, piece: LogPiece) -> bool:
        """Append a page read at ``_end``; True when it reached the log's end (attached)."""
        if piece.offset != self._end:
            return False
        data = piece.data
        at_end = piece.size >= 0 and piece.offset + len(data) >= piece.size
        if at_end:
            self._attached = True
            self._partial = b""
            self._append(data)
            return True
        cut = data.rfind(b"\n")
        whole = data[: cut + 1] if cut >= 0 else data + b"\n"  # a line longer than a page
        parts = whole.split(b"\n")[:-1]
        self._lines.extend(parts)
        self._end += len(whole) if cut >= 0 else len(data)
        self._took(parts, len(whole))
        return False

    async def _catch_up(self, gen: int) -> None:
        """Read forwards until the window holds all the stream has shown: then attached."""
        while not self._attached and gen == self._gen:
            piece = await self._page(offset=self._end)
            if piece is None or gen != self._gen or not piece.data:
                if piece is not None and not piece.data:
                    self._attached = True
                return
            self._take_forward(piece)
            if n := self._excess():
                self._drop_top(n)
        have = self._end + len(self._partial)
        if self._stream_end > have:
            self._attached = False  # the stream went on meanwhile: another round
            await self._catch_up(gen)

    @work(group="page", exclusive=True, exit_on_error=False)
    async def _page_before(self) -> None:
        gen = self._gen
        self._busy = True
        try:
            piece = await self._page(before=self._top)
            if piece is None or gen != self._gen or piece.offset + len(piece.data) != self._top:
                return
            self._prepend(piece)
        finally:
            self._busy = False

    def _prepend(self, piece: LogPiece) -> None:
        data = piece.data
        if not data:
            return
        parts = data.split(b"\n")
        if parts[-1] == b"":
            parts.pop()
        self._lines[:0] = parts
        self._top = piece.offset
        self._first -= len(parts)
        self._bytes += len(data)
        widest = max(map(len, parts), default=0)
        self._widest = max(self._widest, widest)
        self._row_starts = None
        added = self._row_of(len(parts))  # the rows above the view's lines now
        self._drop_bottom(self._excess())
        self._set_virtual(Size(self._virtual_width(), self._rows()))
        self.scroll_to(y=self.scroll_y + max(0, added), animate=False, immediate=True)
        self.refresh()

    @work(group="page", exclusive=True, exit_on_error=False)
    async def _page_after(self) -> None:
        gen = self._gen
        self._busy = True
        try:
            piece = await self._page(offset=self._end)
            if piece is None or gen != self._gen:
                return
            self._forward(piece)
            if self._attached:
                await self._catch_up(gen)
            self._redraw()
        finally:
            self._busy = False

    def _forward(self, piece: LogPiece) -> None:
        """Append a page read forwards; the view stays on its lines."""
        self._take_forward(piece)
        shift = 0
        if n := self._excess():
            shift = self._row_of(n)
            self._drop_top(n)
        self._set_virtual(Size(self._virtual_width(), self._rows()))
        if shift:
            self.scroll_to(y=max(0, self.scroll_y - shift), animate=False, immediate=True)
        self.refresh()

    # --- search ------------------------------------------------------------------------
    def action_search(self) -> None:
        def done(text: str | None) -> None:
            if text is None:
                return
            self.search_text = text.lower()
            self._current = None
            self._cache.clear()
            self.refresh()
            if self.search_text:
                self._search(1, from_view=True)
            self._title()

        self.app.push_screen(LogPrompt("Search the log:", self.search_text), done)

    def action_clear_search(self) -> None:
        self.search_text, self._current = "", None
        self._cache.clear()
        self.refresh()
        self._title()

    def action_next_match(self) -> None:
        if self.search_text:
            self._search(1)

    def action_previous_match(self) -> None:
        if self.search_text:
            self._search(-1)

    @work(group="page", exclusive=True, exit_on_error=False)
    async def _search(self, step: int, from_view: bool = False) -> None:
        """To the next (``step`` 1) or previous (-1) line holding the search text.

        From the current match, or else from the view's top line (itself
        included, going forwards).  Past the window's edge the worker searches
        its file and sends the page from the matching line; a worker that
        cannot search sends pages until one holds a match or the log ends.
        """
        gen, query = self._gen, self.search_text
        current = None if self._current is None else self._current - self._first
        if from_view or current is None or not 0 <= current < self._count():
            current = self.top_line() - 1 if step > 0 else self.top_line()
        self._busy = True
        try:
            i = current
            while gen == self._gen and query == self.search_text:
                found = self._scan(i + step, step)
                if found is not None:
                    self._land(found)
                    return
                edge = self._first + (self._count() - 1 if step > 0 else 0)
                jumped = await self._find_beyond(step, query)
                if jumped is not None:
                    if jumped >= 0:
                        self._land(jumped)
                    else:
                        self.notify(
                            f"no {'further' if step > 0 else 'earlier'} match for {query!r}"
                        )
                    return
                if not await self._more(step):
                    self.notify(f"no {'further' if step > 0 else 'earlier'} match for {query!r}")
                    return
                i = edge - self._first
        finally:
            self._busy = False

    async def _find_beyond(self, step: int, query: str) -> int | None:
        """The worker's search beyond the window: the index of the match now in it.

        -1 when the log holds no match that way; None when the worker cannot
        search (or there is nothing beyond the window that way).
        """
        if self.pages is None or self.key is None:
            return None
        if step > 0 and self._attached:
            return -1  # the window holds the log's end
        if step < 0 and self._top == 0:
            return -1
        where = {"offset": self._end} if step > 0 else {"before": self._top}
        piece = await self._page(find=query, **where)
        if piece is None or piece.found is None:
            return None
        if piece.found < 0:
            return -1
        gen = self._gen
        self.following = False
        self._load(piece)
        if self._attached:
            await self._catch_up(gen)
        context = await self._page(before=piece.found)  # the lines just before it, to see
        above = 0
        if context is not None and context.offset + len(context.data) == self._top:
            count = self._count()
            self._prepend(context)
            above = self._count() - count
        self._redraw()
        return above

    def _scan(self, i: int, step: int) -> int | None:
        query, n = self.search_text, self._count()
        while 0 <= i < n:
            if query in self._text(i).lower():
                return i
            i += step
        return None

    async def _more(self, step: int) -> bool:
        """Fetch the page beyond the window in ``step``'s direction; False at the log's edge."""
        if step > 0:
            if self._attached:
                return False
            piece = await self._page(offset=self._end)
            if piece is None or not piece.data:
                return False
            self._forward(piece)
            if self._attached:
                await self._catch_up(self._gen)
            return True
        if self._top == 0:
            return False
        piece = await self._page(before=self._top)
        if piece is None or not piece.data or piece.offset + len(piece.data) != self._top:
            return False
        self._prepend(piece)
        return True

    def _land(self, i: int) -> None:
        """Make line ``i`` the current match and put it in view."""
        self.following = False
        self._current = self._first + i
        self._cache.clear()
        row = self._row_of(i)
        height = self.scrollable_content_region.height
        if not (self.scroll_y <= row < self.scroll_y + height):
            self.scroll_to(y=max(0, row - height // 3), animate=False, immediate=True)
        self.refresh()
        self._title()

    @property
    def current_match(self) -> str | None:
        """The text of the line of the current match."""
        if self._current is None:
            return None
        i = self._current - self._first
        return self._text(i) if 0 <= i < self._count() else None

    # --- wrap and save ---------------------------------------------------------------------
    def action_wrap(self) -> None:
        top = self.top_line()
        self.wrap = not self.wrap
        self.styles.overflow_x = "hidden" if self.wrap else "auto"
        self._row_starts = None
        self._set_virtual(Size(self._virtual_width(), self._rows()))
        if self.following:
            self._redraw()
        else:
            self.scroll_to(x=0, y=self._row_of(top), animate=False, immediate=True)
        self.refresh()
        self._title()

    def default_save_path(self) -> str:
        if self.proc is None:
            return ""
        return f"./{self.proc.node}-{self.proc.pid}.log"

    def action_save(self) -> None:
        if self.key is None or self.proc is None:
            self.notify("no log to save: select one process", severity="warning")
            return
        key = self.key

        def done(path: str | None) -> None:
            if path:
                self._save(key, path)

        self.app.push_screen(LogPrompt("Save the log to:", self.default_save_path()), done)

    @work(group="save", exclusive=True, exit_on_error=False)
    async def _save(self, key: str, path: str) -> None:
        try:
            size = await self.save(key, Path(path).expanduser())
        except (OSError, ValueError) as e:
            self.notify(f"not saved: {e}", severity="error")
            return
        except Exception as e:
            self.notify(f"not saved: {e or type(e).__name__}", severity="error")
            return
        self.notify(f"saved {size:,} bytes to {path}")

    async def save(self, key: str, path: Path) -> int:
        """Write ``key``'s whole log, read from the worker page by page, to ``path``."""
        if self.pages is None:
            raise ValueError("no worker to read the log from")
        if path.is_dir():
            raise ValueError(f"{path} is a directory")
        tmp = path.with_name(f".{path.name}.part")
        offset = 0
        with open(tmp, "wb") as out:
            try:
                while True:
                    piece = await self.pages(key, offset=offset, limit=SAVE_PAGE)
                    if piece.offset != offset:
                        raise ValueError("the worker answered another offset")
                    if piece.data:
                        out.write(piece.data)
                        offset += len(piece.data)
                    if not piece.data or (piece.size >= 0 and offset >= piece.size):
                        break
            except BaseException:
                out.close()
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        tmp.replace(path)
        return offset

    # --- title ----------------------------------------------------------------------------
    def _title(self) -> None:
        if self.merged:
            title = f"Logs · {len(self.merged)} merged · " + " ".join(self.merged)
        elif self.proc is None:
            title = "Log"
        else:
            title = f"Log · {self.proc.key} · {self.proc.command}"
        parts = []
        if self.proc is None and not self.merged:
            pass
        elif self._ended:
            parts.append("ended")
        elif self.following:
            parts.append("following")
        else:
            parts.append("paused · End to follow")
        if self.search_text:
            parts.append(f"/{self.search_text}")
        if self.wrap:
            parts.append("wrap")
        if not self._attached:
            parts.append(f"bytes {self._top:,}-{self._end:,} of {self._stream_end:,}")
        titles = (title, " · ".join(parts))
        if titles != self._titles:
            self._titles = titles
            self.border_title, self.border_subtitle = titles
