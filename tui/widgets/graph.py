"""A bar graph of a series at the full width of its widget, a few rows high.

`bars` is the pure part: the series resampled to the width (each column the
mean of the points it covers, newest at the right, the full width standing
for a fixed span of time), drawn in eighths of a cell over ``height`` rows
against a fixed top (CPU % against 100) or the series' own peak.  `Graph`
is the widget: a title line with the latest value and the peak, and the
bars under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Group
from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

_EIGHTHS = " ▁▂▃▄▅▆▇█"


def resample(values: Sequence[float], width: int, span: int = 0) -> list[float | None]:
    """``values`` as ``width`` columns, each the mean of the points it covers.

    ``span`` is how many points the full width stands for (the graph's time
    axis: ten minutes of points, say); ``values`` are its newest ones, so a
    short series fills the right part and the rest is None (no data).  With
    no span, the axis is ``values`` themselves, one column a point at most.
    """
    n = len(values)
    if width <= 0 or n == 0:
        return []
    span = max(span, n)
    if not span > width and span == n:
        return list(values)
    missing = span - n  # the axis' oldest points, which have no data
    out: list[float | None] = []
    for col in range(width):
        lo = col * span // width
        hi = max(lo + 1, (col + 1) * span // width)
        part = values[max(0, lo - missing) : max(0, hi - missing)]
        out.append(sum(part) / len(part) if part else None)
    return out


def bars(
    values: Sequence[float], width: int, height: int, top: float | None = None, span: int = 0
) -> list[str]:
    """Rows (top row first) of a bar graph of ``values``, right-aligned in ``width``.

    ``top`` is the value of a full column (the peak of ``values`` when None);
    a value above zero shows at least one eighth, so a trickle is seen.
    ``span``: see `resample`.
    """
    cols = resample(values, width, span)
    peak = top if top is not None else max((v for v in cols if v is not None), default=0.0)
    if peak <= 0:
        peak = 1.0
    eighths = []
    for v in cols:
        if v is None or v <= 0:
            eighths.append(0)
            continue
        e = round(min(v, peak) / peak * height * 8)
        eighths.append(max(e, 1))
    pad = width - len(cols)
    rows = []
    for r in range(height - 1, -1, -1):  # top row first
        base = r * 8
        cells = [_EIGHTHS[min(8, max(0, e - base))] for e in eighths]
        rows.append(" " * pad + "".join(cells))
    return rows


class Graph(Widget):
    """A titled bar graph; `show` hands it new points."""

    DEFAULT_CSS = """
    Graph {
        height: 4;
        width: 1fr;
    }
    """

    def __init__(
        self,
        title: str,
        unit: Callable[[float], str],
        top: float | None = None,
        style: str = "green",
        span: int = 0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.title = title
        self.unit = unit
        self.top = top
        self.style = style
        self.span = span
        self.values: list[float] = []

    def show(self, values: Sequence[float], top: float | None = None) -> None:
        values = list(values)
        if top is not None:
            self.top = top
        if values != self.values:
            self.values = values
            self.refresh()

    def render(self) -> RenderResult:
        width = max(1, self.size.width)
        height = max(1, self.size.height - 1)
        head = Text(self.title, style="bold")
        if self.values:
            head.append(f"  last {self.unit(self.values[-1])}")
            head.append(f"  peak {self.unit(max(self.values))}", style="dim")
            if self.top is not None:
                head.append(f"  of {self.unit(self.top)}", style="dim")
        else:
            head.append("  no samples yet", style="dim")
        rows = bars(self.values, width, height, self.top, self.span)
        return Group(head, *(Text(row, style=self.style) for row in rows))
