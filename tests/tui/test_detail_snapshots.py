"""Snapshots of the events, node detail and process detail screens at 80x24 and 160x48.

Over the deterministic cluster of `tests.tui.cluster`, with ten minutes of
beats for node alpha and a process that ran and ended on it, all at fixed
times.  Review every change to ``__snapshots__/`` before accepting it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from corral.master.control import Master
from corral.master.model import NODE_SERIES, TREND_BUCKET, TREND_SPAN, Trend
from corral.transport.messages import Metrics, ProcInfo, ProcSample
from corral.tui.app import CorralApp
from corral.tui.widgets.events import EventsScreen
from corral.tui.widgets.node_detail import NodeDetail
from corral.tui.widgets.proc_detail import ProcDetail
from tests.tui.cluster import T0, GiB, MiB, build_master, clock

SIZES = [(80, 24), (160, 48)]
ENDED = ProcInfo(
    launch="L4300",
    pid=4300,
    app="etl",
    argv=["./etl", "--input", "/data/2023-11-14.csv", "--batch", "500"],
    state="running",
    started_at=T0 - 400,
)


def with_history(master: Master, monkeypatch: pytest.MonkeyPatch) -> Master:
    """Ten minutes of alpha's beats, and alpha:4300 that ran, stopped, went on, and failed."""
    cluster = master.cluster
    # build_master beat alpha at T0 - 0.4 already; graphs start over from ten minutes back.
    cluster._nodes["alpha"].trend = Trend(len(NODE_SERIES))
    now = [T0 - TREND_SPAN]
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: now[0])
        now[0] = ENDED.started_at
        cluster.update_proc("alpha", ENDED)
        now[0] = T0 - TREND_SPAN
        step = TREND_BUCKET / 2
        cpu_time = 0.0
        for i in range(int(TREND_SPAN / step)):
            now[0] = T0 - TREND_SPAN + i * step
            wave = (i * 37) % 100
            metrics = Metrics(
                cpu_percent=float(wave),
                mem_used=int((4 + (i % 40) / 10) * GiB),
                mem_total=16 * GiB,
                load1=1.0 + (i % 30) / 10,
                procs_alive=2 + (i // 40) % 3,
            )
            samples = []
            if now[0] >= T0 - 42:  # alpha:4242 (sleep 60) started 42 s ago
                samples.append(ProcSample(4242, "sleeping", 1.5, 0.25, 12 * MiB, 14 * MiB))
            if ENDED.started_at <= now[0] < T0 - 60:
                cpu_time += step * (0.2 + (i % 7) / 10)
                state = "stopped" if T0 - 300 <= now[0] < T0 - 240 else "running"
                rss = (100 + (i % 50) * 4) * MiB
                samples.append(ProcSample(4300, state, cpu_time * 0.8, cpu_time * 0.2, rss, rss))
            cluster.beat("alpha", metrics, samples)
        now[0] = T0 - 60
        end = ProcInfo(
            **{
                **{f: getattr(ENDED, f) for f in ENDED.__struct_fields__},
                "state": "exited",
                "exit_code": 3,
                "ended_at": T0 - 60,
                "cpu_user": cpu_time * 0.8,
                "cpu_sys": cpu_time * 0.2,
                "max_rss": 296 * MiB,
            }
        )
        cluster.update_proc("alpha", end)
        lines = [f"batch {i:03d}: 500 rows loaded" for i in range(1, 40)]
        lines += ["error: /data/2023-11-14.csv line 20117: bad date '2023-13-01'", "giving up"]
        cluster.set_log_tail("alpha:4300", "L4300", lines)
        now[0] = T0 - 0.4
    # build_master marks charlie lost at the real time: stamp that event at a fixed one.
    events = [e if e.ts <= T0 else msgspec.structs.replace(e, ts=T0 - 5) for e in cluster.events]
    cluster.events.clear()
    cluster.events.extend(events)
    return master


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CorralApp]:
    master = with_history(build_master(tmp_path, monkeypatch), monkeypatch)
    yield CorralApp(master, start_master=False, clock=clock)
    master.events.close()


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.3)
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def opener(kind: str, arg: str = ""):  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, CorralApp)
        app.dashboard.address = "127.0.0.1:7070"
        cluster = app.master.cluster
        if kind == "events":
            await app.push_screen(EventsScreen(cluster, clock=clock))
        elif kind == "node":
            await app.push_screen(NodeDetail(cluster, arg, clock=clock))
        else:
            await app.push_screen(ProcDetail(cluster, arg, clock=clock))
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_events_screen(app: CorralApp, snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=opener("events"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_node_detail(app: CorralApp, snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=opener("node", "alpha"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_proc_detail_live(app: CorralApp, snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=opener("proc", "alpha:4242"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_proc_detail_death_certificate(app: CorralApp, snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=opener("proc", "alpha:4300"))
