"""The event loop of corral's long-running processes: uvloop's.

The worker daemon and the master spend most of a launch round trip, and
most of an idle minute, in event-loop steps (a frame read, a task woken,
a timer fired).  uvloop's loop does those in C.  Measured in interleaved
runs on the CI machine kind: the launch bench's loop at p50 1.85-1.93 ms on
asyncio's loop against 1.59-1.65 ms on uvloop's; the idle master with its
dashboard at 4.3-5.1% of a core against 3.8-4.4%.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
