"""The event log on disk: one JSON object a line in ``STATE_DIR/events.log``.

Bounded: when the file would pass ``max_bytes`` it is renamed to
``events.log.1`` (replacing the one before) and a new one is started, so
the two never hold much more than twice that.  Private: created mode 0600
(and put back to 0600 if found otherwise), because its lines carry every
command line launched.  Reading the last N events seeks back from the end
in blocks; it never loads a whole file.

`RateLimiter` keeps a repetitive source (a peer refused again and again)
to one line per interval, with a count of the lines it held back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from corral.master.model import Event

log = logging.getLogger("corral.master")

MAX_BYTES = 8 * 1024 * 1024  # events.log is rotated at this size
BLOCK = 64 * 1024  # bytes read at a time when reading backwards
MODE = 0o600

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


class EventLog:
    """Appends events, unbuffered so a crash loses at most the line being written."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.old = path.with_name(path.name + ".1")
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0

    def append(self, event: Event) -> None:
        line = _encoder.encode(event) + b"\n"
        try:
            if self._fd is None:
                self._open()
            elif self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, line)  # one write: O_APPEND keeps the line whole
            self._size += len(line)
        except OSError as e:  # a full disk must not stop the control plane
            log.warning("cannot write event log %s: %s", self.path, e)

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.path, flags, MODE)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o777 != MODE:  # made by an older corral, or under another umask
                os.fchmod(fd, MODE)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, st.st_size

    def _rotate(self) -> None:
        self.close()
        os.replace(self.path, self.old)
        self._open()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, limit: int = 1000) -> list[Event]:
        """The last ``limit`` events on disk, oldest first (malformed lines skipped).

        Reads back from the end of ``events.log`` (and of ``events.log.1``
        when that is not enough) only as far as ``limit`` lines need.
        """
        if limit <= 0:
            return []
        lines = tail_lines(self.path, limit)
        if len(lines) < limit:
            lines = tail_lines(self.old, limit - len(lines)) + lines
        out = []
        for line in lines:
            try:
                out.append(_decoder.decode(line))
            except msgspec.DecodeError:
                continue
        return out


def merge_events(*parts: Iterable[Event], limit: int) -> list[Event]:
    """The last ``limit`` of several event lists, oldest first, each event once."""
    merged = sorted(set().union(*parts), key=lambda ev: ev.ts)
    return merged[-limit:] if limit > 0 else []


def tail_lines(path: Path, count: int, block: int = BLOCK) -> list[bytes]:
    """The last ``count`` non-empty lines of ``path``, oldest first; [] if unreadable.

    Reads blocks backwards from the end until ``count`` whole lines are in
    hand, so the cost follows ``count``, not the file's size.
    """
    if count <= 0:
        return []
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError:
        return []
    with f:
        pos = f.seek(0, os.SEEK_END)
        blocks: list[bytes] = []
        newlines = 0
        while pos > 0 and newlines <= count:  # count + 1 newlines bound count whole lines
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step)
            blocks.append(data)
            newlines += data.count(b"\n")
    lines = b"".join(reversed(blocks)).split(b"\n")
    if pos > 0:
        lines = lines[1:]  # starts mid-line
    return [line for line in lines if line][-count:]


class RateLimiter:
    """At most one line per key (e.g. a peer's address) per ``interval`` seconds.

    ``admit(key, message)`` returns the line to log, or None to drop it.
    The first line after some were dropped carries their count, e.g.
    ``"refused 10.0.0.7: bad token (41 more suppressed)"``.  `flush` hands
    over the counts of keys that went quiet with lines still unreported.

    At most ``max_keys`` keys are tracked; past that, lines from new keys
    share the one key ``"*"``, so a flood from many addresses costs a
    bounded amount of memory and of log.
    """

    def __init__(
        self,
        interval: float = 10.0,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[str, float] = {}  # key -> when its last line was let through
        self._dropped: dict[str, int] = {}  # key -> lines dropped since then
        self._pruned_at = float("-inf")

    def admit(self, key: str, message: str) -> str | None:
        """``message`` (with a count of dropped lines) if ``key`` may log now, else None."""
        now = self._clock()
        key = self._slot(key, now)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return None
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        return f"{message} ({dropped} more suppressed)" if dropped else message

    def flush(self) -> dict[str, int]:
        """Keys whose interval has passed with lines dropped, and how many; forgets them."""
        now = self._clock()
        done = {k: n for k, n in self._dropped.items() if now - self._last[k] >= self.interval}
        for k in done:
            del self._dropped[k]
        self._prune(now)
        return done

    def _slot(self, key: str, now: float) -> str:
        if key in self._last or len(self._last) < self.max_keys:
            return key
        if now - self._pruned_at >= self.interval / 10:  # a flood of new keys prunes rarely
            self._prune(now)
        return key if len(self._last) < self.max_keys else "*"

    def _prune(self, now: float) -> None:
        """Forget keys whose interval has passed and that have nothing unreported."""
        self._pruned_at = now
        for k in [k for k, t in self._last.items() if now - t >= self.interval]:
            if k not in self._dropped:
                del self._last[k]
