"""The seed and its shim, driven through a real forker."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest

from corral.daemon import procfs, shim
from corral.daemon.forker import Forker
from corral.daemon.store import AppStore
from tests.daemon.harness import wait_for

SPARES = 20


@pytest.fixture
async def forker(store: AppStore) -> AsyncIterator[Forker]:
    f = Forker(log=lambda _: None)
    f.start(store.fd)
    yield f
    f.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_a_signal_to_a_seed_fresh_from_its_fork_is_not_lost(forker: Forker, sig: int):
    """The pid a launch reports is the seed's, maybe forked a moment ago.

    The shim ignores these signals, and the seed inherits that until it
    sets its own: a signal sent in between must still reach the program.
    (Whether one lands in between is up to the scheduler: a seed that
    ignored it would be caught now and then, never one that honours it.)
    """
    for _ in range(SPARES):
        spare = await forker.take(5.0)
        forker.refill()  # the next one is forked now, taken at once: as fresh as can be
        os.kill(spare.seed, sig)
        try:
            await wait_for(lambda s=spare: ended(s.seed, s.seed_start), what="its end")
        finally:
            shim.retire(spare)
            os.close(spare.pidfd)


def ended(pid: int, start: int) -> bool:
    """Gone, or a zombie (its shim reaps it once the daemon lets the spare go)."""
    st = procfs.stat(pid)
    return st is None or st.start != start or st.state == "zombie"
