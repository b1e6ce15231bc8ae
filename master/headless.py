"""Run the master without a screen: serve until SIGINT/SIGTERM, printing events.

The headless front end composes what the dashboard composes too: the
`Master`, its `Deployer`, and the control API over both.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable

from corral.master.api import ApiServer, start_api
from corral.master.control import Master
from corral.master.deployer import Deployer
from corral.master.model import Change

Announce = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


async def serve(master: Master, announce: Announce = _print, ready: Announce | None = None) -> int:
    """Start ``master`` and its API, announce their addresses and every event, stop on a signal."""
    api = await _start(master)
    if api is None:
        return 1
    reachable = master.reachable(master.listen_address)
    bound = "" if reachable == master.listen_address else f" (listening on {master.listen_address})"
    announce(f"corral master: workers connect to {reachable}{bound}")
    announce(f"corral master: control API on {api.scheme}://{api.address}")
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
        await api.stop()
        await master.stop()
    announce("corral master: stopped (workers and their programs keep running)")
    return 0


async def _start(master: Master) -> ApiServer | None:
    """The master, then its API; None (the reason on stderr) if either cannot start."""
    try:
        await master.start()
        return await start_api(master, Deployer(master))
    except OSError as e:  # StartError says which step failed
        await master.stop()  # whatever did bind (the worker port, say) is let go
        print(f"corral master: {e}", file=sys.stderr)
        return None
