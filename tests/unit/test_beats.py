"""The heartbeat grid (transport.beats): where a worker's beats fall on the master's clock."""

from __future__ import annotations

import math

import pytest

from corral.transport import beats


def test_the_window_grows_with_the_nodes_between_its_bounds() -> None:
    assert beats.window(1.0, 1) == pytest.approx(0.05)  # narrowest: 5% of H
    assert beats.window(1.0, 2000) == pytest.approx(0.2)  # 100 us a node
    assert beats.window(1.0, 100_000) == pytest.approx(0.5)  # widest: half a beat
    assert beats.window(0.2, 1) == pytest.approx(0.01)  # follows H


def test_offsets_are_stable_spread_and_inside_the_window() -> None:
    offsets = [beats.offset(f"node{i}", 0.05) for i in range(1000)]
    assert all(0 <= o < 0.05 for o in offsets)
    assert offsets == [beats.offset(f"node{i}", 0.05) for i in range(1000)]  # every connection
    assert len(set(offsets)) > 990
    assert max(offsets) - min(offsets) > 0.045  # the whole window is used
    for bad in (0.0, -1.0, math.nan, math.inf):
        assert beats.offset("node1", bad) == 0.0


@pytest.mark.parametrize("skew", [0.0, 12.3456, -1.7e9])  # loop clock less the master's
@pytest.mark.parametrize("after", [0.0, 0.2, 0.999, 5.5, 1.7e9 + 0.25])
def test_the_next_beat_is_the_next_slot_of_the_grid(skew: float, after: float) -> None:
    h, at = 1.0, 0.0123
    local = after + skew
    due = beats.next_beat(local, skew, h, at)
    assert local < due <= local + h + 1e-6
    phase = (due - skew - at) % h  # a whole number of beats past the node's offset
    assert min(phase, h - phase) < 1e-6
