"""Aligned plain-text tables and human units, with no dependencies."""

from __future__ import annotations

from collections.abc import Sequence


def human_bytes(n: float | None) -> str:
    """``12.3M``, ``1.2G``, ``512K``, ``900B`` (powers of 1024); ``-`` if unknown."""
    if n is None or n < 0:
        return "-"
    if n < 1024:
        return f"{int(n)}B"
    for unit in "KMGTP":
        n /= 1024
        if n < 1024 or unit == "P":
            return f"{n:.0f}{unit}" if n >= 100 else f"{n:.1f}{unit}"
    return f"{n:.1f}P"  # pragma: no cover - loop always returns


def cpu_seconds(s: float | None) -> str:
    """CPU time: ``0.00s``, ``1.23s``, ``45.6s``, then ``2m03s`` and ``1h02m``."""
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    return duration(s)


def duration(s: float | None) -> str:
    """A span of time: ``0.4s``, ``12s``, ``3m05s``, ``1h02m``, ``2d03h``."""
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
