"""How every benchmark prints: its figure, the reference from the same run, the target."""

from __future__ import annotations

import platform
import statistics

import psutil


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    mem = psutil.virtual_memory().total / 2**30
    return f"{psutil.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}"


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank."""
    ordered = sorted(values)
    idx = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[idx]


def median(values: list[float]) -> float:
    return statistics.median(values)


def line(name: str, figure: str, reference: str, target: str, ok: bool) -> str:
    mark = "PASS" if ok else "MISS"
    return f"[{mark}] {name}: {figure} | reference: {reference} | target: {target}"
