"""Pilot tests of the events screen (``v``, ``:events``) over real workers and programs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from corral.master.control import Master, MasterConfig
from corral.master.events import EventLog
from corral.master.model import Event
from corral.tui.app import CorralApp
from corral.tui.widgets.command_line import CommandLine
from corral.tui.widgets.events import EventsPane, EventsScreen, severity
from tests.tui.conftest import HEARTBEAT, Workers, dashboard, until

NODES = ("n1", "n2")


def config(tmp_path: Path) -> MasterConfig:
    return MasterConfig(
        listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=HEARTBEAT
    )


@pytest.fixture
async def running(tmp_path: Path, workers: Workers) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard (80x24) over a real master with two real workers, both alive."""
    async with dashboard(workers, tmp_path / "state", NODES, size=(80, 24)) as running:
        yield running


def pane(app: CorralApp) -> EventsPane:
    assert isinstance(app.screen, EventsScreen)
    return app.screen.pane


def lines(app: CorralApp) -> list[str]:
    """The pane's lines as drawn on screen."""
    p = pane(app)
    return [p.render_line(y).text for y in range(p.size.height)]


async def open_events(app: CorralApp, pilot: Pilot[None]) -> EventsPane:
    await pilot.press("v")
    await until(pilot, lambda: isinstance(app.screen, EventsScreen))
    return pane(app)


async def test_v_shows_the_event_log_newest_first_and_live(running) -> None:
    app, pilot = running
    p = await open_events(app, pilot)
    joined = [ev.node for ev in p.shown if ev.kind == "node.joined"]
    assert sorted(joined) == ["n1", "n2"]
    assert [ev.ts for ev in p.shown] == sorted((ev.ts for ev in p.shown), reverse=True)
    await app.master.launch(["sh", "-c", "exit 4"], nodes=["n2"])

    def ended() -> bool:
        """the end drawn"""
        return any("proc.ended" in line for line in lines(app))

    await until(pilot, ended)
    shown = lines(app)
    end = next(i for i, line in enumerate(shown) if "proc.ended" in line)
    start = next(i for i, line in enumerate(shown) if "proc.launched" in line)
    assert end < start  # newest first
    assert "exited 4" in shown[end] and "n2:" in shown[end]
    assert severity(p.shown[end]) == "red"  # a non-zero exit
    await pilot.press("escape")
    await until(pilot, lambda: app.screen is app.dashboard)


async def test_scrolled_away_the_view_stays_and_counts_new_events(running) -> None:
    app, pilot = running
    for _ in range(8):  # 32 events: more than the pane shows at 80x24
        await app.master.launch(["true"], all_nodes=True)
    ended = lambda: sum(ev.kind == "proc.ended" for ev in app.master.cluster.events) >= 16  # noqa: E731
    await until(pilot, ended)
    p = await open_events(app, pilot)
    assert len(p.shown) > p.size.height
    await pilot.press("pagedown")
    await until(pilot, lambda: p.scroll_y > 0)
    before = lines(app)
    await app.master.launch(["sleep", "30"], nodes=["n1"])
    await until(pilot, lambda: p.new_count >= 1)
    assert lines(app) == before  # what was read did not move
    assert f"{p.new_count} new ↑" in str(p.border_subtitle)
    await pilot.press("home")
    await until(pilot, lambda: p.new_count == 0)
    assert "new" not in str(p.border_subtitle)
    assert any("proc.launched" in line and "sleep 30" in line for line in lines(app)[:3])


async def test_slash_filters_by_text_and_esc_clears_then_leaves(running) -> None:
    app, pilot = running
    await app.master.launch(["sleep", "30"], nodes=["n1"])
    await app.master.launch(["sleep", "31"], nodes=["n2"])
    p = await open_events(app, pilot)
    await until(pilot, lambda: sum(ev.kind == "proc.launched" for ev in p.shown) == 2)
    await pilot.press("slash", "n", "2")
    await until(pilot, lambda: p.query_text == "n2")
    assert p.shown and all("n2" in f"{ev.node} {ev.message}" for ev in p.shown)
    assert "filter: n2" in str(p.border_subtitle)
    await pilot.press("enter")  # back to the list, the filter stays
    assert p.has_focus and p.query_text == "n2"
    await pilot.press("escape")  # clears the filter
    await until(pilot, lambda: p.query_text == "")
    assert any(ev.node == "n1" for ev in p.shown)
    await pilot.press("escape")  # and leaves
    await until(pilot, lambda: app.screen is app.dashboard)


async def test_colon_events_opens_the_screen(running) -> None:
    app, pilot = running
    await pilot.press("colon")
    await until(pilot, lambda: isinstance(app.focused, CommandLine))
    await pilot.press(*"events", "enter")
    await until(pilot, lambda: isinstance(app.screen, EventsScreen))


async def test_rm_is_an_event(running) -> None:
    app, pilot = running
    await app.master.launch(["sleep", "30"], nodes=["n1"], app="napper")
    results = await app.master.remove("napper", force=True)
    assert not [r.error for r in results if r.error]
    p = await open_events(app, pilot)
    await until(pilot, lambda: p.shown[0].kind == "app.removed")
    assert p.shown[0].node == "n1" and "napper" in p.shown[0].message
    assert "stopped 1" in p.shown[0].message
    assert severity(p.shown[0]) == "cyan"


async def test_a_restarted_master_shows_the_events_of_the_last_run(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    old = EventLog(cfg.state_dir / "events.log")
    old.append(Event(ts=1_700_000_000.0, kind="node.lost", node="n9", message="n9 lost: gone"))
    old.close()
    app = CorralApp(Master(cfg))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(app.master.listen_address))
        p = await open_events(app, pilot)
        assert [ev.node for ev in p.shown] == ["n9"]
        assert "n9 lost: gone" in lines(app)[0]
        assert severity(p.shown[0]) == "bold red"


def test_severity_colours() -> None:
    def ev(kind: str, message: str = "") -> Event:
        return Event(ts=0.0, kind=kind, node="n", message=message)

    assert severity(ev("node.lost")) == "bold red"
    assert severity(ev("node.suspect")) == "yellow"
    assert severity(ev("node.joined")) == severity(ev("node.back")) == "green"
    assert severity(ev("proc.ended", "n:1 exited 0: true")) == ""
    assert severity(ev("proc.ended", "n:1 killed by SIGINT: sleep 9")) == "yellow"
    assert severity(ev("proc.ended", "n:1 killed by SIGSEGV, core dumped: ./x")) == "red"


async def test_the_pane_keeps_at_most_its_limit_with_a_filter_on() -> None:
    from textual.app import App, ComposeResult

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield EventsPane(limit=5)

    def ev(i: int) -> Event:
        return Event(
            ts=1_700_000_000.0 + i, kind="proc.launched", node=f"n{i % 2}", message=f"#{i}"
        )

    app = One()
    async with app.run_test(size=(80, 12)):
        p = app.query_one(EventsPane)
        p.set_query("n1")
        p.add(ev(i) for i in range(4))
        p.add(ev(i) for i in range(4, 9))  # 9 events in all: 0-3 go
        assert [e.message for e in p.events] == ["#4", "#5", "#6", "#7", "#8"]
        assert [e.message for e in p.shown] == ["#7", "#5"]  # n1's, newest first
        assert set(p._lines) <= set(p.events)
        p.set_query("")
        assert [e.message for e in p.shown] == ["#8", "#7", "#6", "#5", "#4"]


async def test_a_ring_replaced_whole_is_redrawn_with_its_older_events(running) -> None:
    """A new leader reads earlier leaders' events back (etcd): an open pane shows them."""
    app, pilot = running
    p = await open_events(app, pilot)
    cluster = app.master.cluster
    now = list(cluster.events)
    older = [
        Event(ts=now[0].ts - 100 + i, kind="job.placed", node="m0", message=f"earlier {i}")
        for i in range(3)
    ]
    cluster.replace_events([*older, *now])
    await until(pilot, lambda: len(p.events) == len(now) + 3)
    assert [ev.message for ev in p.shown[-3:]] == ["earlier 2", "earlier 1", "earlier 0"]
    cluster.note("master.leader", "", "live again")  # and new events still go on top
    await until(pilot, lambda: p.shown[0].message == "live again")


async def test_q_types_into_the_filter_and_goes_back_outside_it(running) -> None:
    app, pilot = running
    await open_events(app, pilot)
    await pilot.press("slash", *"quota")
    bar = app.screen.query_one("#events-filter", Input)
    assert bar.value == "quota" and isinstance(app.screen, EventsScreen)  # typed, not back
    await pilot.press("enter", "q")  # the filter kept, the pane focused: q clears it first
    await until(pilot, lambda: bar.value == "")
    assert isinstance(app.screen, EventsScreen)
    await pilot.press("q")
    await until(pilot, lambda: app.screen is app.dashboard)
    assert app.is_running
