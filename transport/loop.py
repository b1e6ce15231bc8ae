"""The event loop of corral's long-running headless processes: uvloop's.

The worker daemon and the headless master spend most of a launch round trip
in event-loop steps (a frame read, a task woken, a reply written).
uvloop's loop does those in C: in interleaved runs of the launch bench's
loop, p50 1.85-1.93 ms on asyncio's loop against 1.59-1.65 ms on uvloop's.
The dashboard keeps Textual's own (asyncio) loop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a uvloop event loop."""
    return uvloop.run(main)
