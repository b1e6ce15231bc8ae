"""Plain text for people: sizes, durations, aligned tables.

One spelling for the command line, the dashboard and the master's own
messages.  Sizes are written as coreutils' ``ls -h`` and ``df -h`` write
them: powers of 1024, one decimal below 10 (``1.5K``, ``3.0G``), whole
numbers above (``15M``, ``300M``).  Standard library only, no imports.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the command line loads this module: no collections at run time
if TYPE_CHECKING:
    from collections.abc import Sequence

_UNITS = "KMGTPE"


def human_bytes(n: float | None) -> str:
    """``900B``, ``1.5K``, ``15M``, ``1.2G``; ``-`` if unknown (None or negative)."""
    if n is None or n < 0:
        return "-"
    if n < 1024:
        return f"{int(n)}B"
    size = float(n)
    for unit in _UNITS:
        size /= 1024
        if round(size, 1) < 10:
            return f"{size:.1f}{unit}"
        if round(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover - the last unit returns


def duration(s: float | None) -> str:
    """A span of time: ``0.4s``, ``12s``, ``3m05s``, ``1h02m``, ``2d03h``; ``-`` if unknown."""
    if s is None:
        return "-"
    s = max(0.0, s)
    if s < 10:
        return f"{s:.1f}s"
    whole = int(s)
    if whole < 60:
        return f"{whole}s"
    m, sec = divmod(whole, 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def cpu_seconds(s: float | None) -> str:
    """CPU time: ``0.00s``, ``1.23s``, ``45.6s``, then ``2m03s`` and ``1h02m``."""
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    return duration(s)


def render(
    headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[str] = ()
) -> str:
    """Columns padded to their widest cell; headers named in ``right`` align right.

    The last column is never padded, so a long command line does not drag trailing blanks.
    """
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    flush_right = set(right)
    lines = []
    for r in cells:
        parts = []
        for i, cell in enumerate(r):
            last = i == len(r) - 1
            if headers[i] in flush_right:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell if last else cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def abridged(items: Sequence[object], limit: int = 4) -> str:
    """``a, b, c`` or, past ``limit``, ``a, b, c, d and 3 more``."""
    texts = [str(i) for i in items]
    if len(texts) <= limit:
        return ", ".join(texts)
    return ", ".join(texts[:limit]) + f" and {len(texts) - limit} more"
