"""Run the master without a screen: serve until SIGINT/SIGTERM, printing events."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable

from corral.master.control import Master
from corral.master.model import Change

Announce = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


async def serve(master: Master, announce: Announce = _print, ready: Announce | None = None) -> int:
    """Start ``master``, announce its addresses and every event, stop on a signal."""
    try:
        await master.start()
    except OSError as e:  # StartError says which step failed
        print(f"corral master: {e}", file=sys.stderr)
        return 1
    announce(f"corral master: workers connect to {master.listen_address}")
    announce(f"corral master: control API on http://{master.api_address}")
    announce(f"corral master: state in {master.config.state_dir}")
    if ready is not None:
        ready(master.listen_address)

    def on_change(change: Change) -> None:
        for ev in change.events:
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.ts))
            announce(f"{stamp} {ev.kind:<14} {ev.message}")

    unsubscribe = master.cluster.subscribe(on_change)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        unsubscribe()
        await master.stop()
    announce("corral master: stopped (workers and their programs keep running)")
    return 0
