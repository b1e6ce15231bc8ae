"""When a worker beats: on a grid of the master's clock, so its nodes' beats come together.

Every beat a master hears on its own costs it a wake-up: the event loop
leaves ``epoll_wait``, the TLS record, the frame, the model's change, the
Pong, back to sleep, each time with cold caches.  Heard back to back, the
same beats cost a fraction of that.  Measured with 100 simulated nodes at
1 Hz (`bench.tui_feed`'s idle master): spread over the whole second, a
headless master used 4.3-5.5% of a core; with every beat inside a 20 ms
window, 1.2-1.4%; 50 ms, 1.7-1.9%; 250 ms, 3.1-3.9%.  A dashboard gains
more, as its changes come in one refresh instead of ten.

So the master announces a window (`window`, in ``Welcome.beat_window``) and
each worker beats at the master's times ``k*H + offset``, its ``offset``
inside the window taken from its name (`offset`: stable across restarts,
spread across nodes).  The worker knows the master's clock from
``Welcome.now`` (to within the Welcome's one-way trip).  The window grows
with the number of nodes, so that thousands of beats are not all waiting
on each other: at `PER_NODE` seconds a node it stays about as long as the
master takes to handle them, up to half a beat.
"""

from __future__ import annotations

import math
import zlib

PER_NODE = 100e-6  # seconds of window per node: about what a master spends on one beat
MIN_SHARE = 0.05  # of H: the narrowest window (50 ms at the default 1 s)
MAX_SHARE = 0.5  # of H: the widest


def window(heartbeat: float, nodes: int) -> float:
    """The window the master announces when it has ``nodes`` nodes (seconds)."""
    return min(heartbeat * MAX_SHARE, max(heartbeat * MIN_SHARE, nodes * PER_NODE))


def offset(name: str, window: float) -> float:
    """Where in ``window`` the node ``name`` beats: the same at every connection."""
    if not (math.isfinite(window) and window > 0):
        return 0.0
    return window * (zlib.crc32(name.encode()) / 2**32)


def next_beat(after: float, skew: float, heartbeat: float, offset: float) -> float:
    """The first beat after ``after`` (local clock), on the grid ``k*H + offset`` of
    the master's clock, which reads ``local - skew``."""
    k = math.floor((after - skew - offset) / heartbeat) + 1
    return k * heartbeat + offset + skew
