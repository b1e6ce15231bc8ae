"""The dashboard keeps no dead widgets: its footer's keys go when they are rebuilt.

Found by the soak benchmark (bench/soak.py, issue 11 item 8): every change
of the bindings rebuilt the footer, and each old key stayed alive, watched
by the footer, 75 MiB a minute in a busy cluster.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets._footer import FooterKey

from corral.master.control import Master
from corral.tui.app import CorralApp
from corral.tui.widgets.footer import KeyFooter
from tests.tui.cluster import build_master, clock
from tests.tui.conftest import until

SIZE = (160, 48)


@pytest.fixture
def master(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Master]:
    m = build_master(tmp_path, monkeypatch)
    yield m
    m.events.close()


def _keys_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FooterKey))


async def test_footer_rebuilds_leave_no_keys_behind(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        footer = app.dashboard.query_one(KeyFooter)
        rebuilt = 0
        for i in range(8):  # each width rebuilds the keys that fit
            before = {id(k) for k in footer.query(FooterKey)}  # no reference kept
            await pilot.resize_terminal(SIZE[0] - 40 * (i % 2), SIZE[1])
            await pilot.pause()
            await pilot.pause()
            rebuilt += {id(k) for k in footer.query(FooterKey)}.isdisjoint(before)
        assert rebuilt >= 4

        def only_those_shown() -> bool:
            """the old keys freed once their removal is done"""
            return _keys_alive() == len(app.query(FooterKey))

        await until(pilot, only_those_shown, timeout=5)


async def test_bindings_republished_unchanged_keep_the_same_keys(master: Master) -> None:
    app = CorralApp(master, start_master=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        footer = app.dashboard.query_one(KeyFooter)
        keys = list(footer.query(FooterKey))
        assert keys
        for _ in range(5):
            app.screen.refresh_bindings()
            await pilot.pause()
        assert list(footer.query(FooterKey)) == keys  # the same widgets, not rebuilt
