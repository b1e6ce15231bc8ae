"""Pilot tests of the node and process detail screens over real workers and programs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable

from corral.master.model import ProcView
from corral.tui.app import CorralApp
from corral.tui.widgets.graph import Graph
from corral.tui.widgets.node_detail import NodeDetail
from corral.tui.widgets.nodes import NodesTable
from corral.tui.widgets.proc_detail import ProcDetail
from corral.tui.widgets.procs import ProcsTable
from tests.tui.conftest import Workers, dashboard, until

NODES = ("n1", "n2")
BUSY = ["sh", "-c", "while :; do :; done"]
CHATTY = ["sh", "-c", "for i in $(seq 1 30); do echo line $i; done; sleep 1; exit 3"]


@pytest.fixture
async def running(tmp_path: Path, workers: Workers) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard (120x40) over a real master with two real workers, both alive."""
    async with dashboard(workers, tmp_path / "state", NODES) as running:
        yield running


def text_of(widget: Widget) -> str:
    """What ``widget`` draws, as text."""
    region = Region(0, 0, *widget.outer_size)
    return "\n".join(strip.text for strip in widget.render_lines(region))


def screen_text(app: CorralApp, *ids: str) -> str:
    return "\n".join(text_of(app.screen.query_one(f"#{i}")) for i in ids)


async def launch(app: CorralApp, pilot: Pilot[None], argv: list[str], node: str = "n1") -> str:
    """Launch ``argv`` on ``node`` and select its row: its key."""
    result = await app.master.launch(argv, nodes=[node])
    key = result.procs[0].key
    procs = app.dashboard.query_one(ProcsTable)
    await until(pilot, lambda: key in procs.views)
    app.dashboard._select(key)
    await until(pilot, lambda: procs.selected == key)
    return key


def view(app: CorralApp, key: str) -> ProcView:
    v = app.master.cluster.proc(key)
    assert v is not None
    return v


async def test_enter_on_a_node_opens_its_detail_live(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, ["sleep", "30"], node="n2")
    nodes = app.dashboard.query_one(NodesTable)
    nodes.focus()
    nodes.move_cursor(row=1)
    assert nodes.selected == "n2"
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, NodeDetail))
    detail = app.screen
    assert isinstance(detail, NodeDetail) and detail.node_name == "n2"
    facts = screen_text(app, "node-facts")
    n2 = app.master.cluster.node("n2")
    assert n2.hostname in facts and n2.address in facts and n2.boot_id in facts
    assert os.uname().release in facts  # the worker's kernel, as it told the master
    assert "cores" in facts and "heartbeat" in facts
    # sleep 30 is alive: counted by a beat after the launch (the newest point is the mean
    # of its 5 s bucket's beats, which may hold one from before the launch)
    procs = lambda: app.screen.query_one("#node-procs", Graph).values  # noqa: E731
    await until(pilot, lambda: procs() and procs()[-1] > 0.0)
    table = app.screen.query_one("#node-proc-table", DataTable)
    await until(pilot, lambda: key in [str(k.value) for k in table.rows])
    # Live: a second launch on n2 shows up without leaving the screen.
    second = (await app.master.launch(["sleep", "31"], nodes=["n2"])).procs[0].key
    await until(pilot, lambda: second in [str(k.value) for k in table.rows])
    table.focus()
    table.move_cursor(row=[str(k.value) for k in table.rows].index(key))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ProcDetail))
    assert app.screen.key == key  # type: ignore[attr-defined]
    await pilot.press("escape")
    await until(pilot, lambda: isinstance(app.screen, NodeDetail))
    await pilot.press("q")  # as Escape on a screen of its own: back, not quit
    await until(pilot, lambda: app.screen is app.dashboard)
    assert app.is_running


async def test_f_on_a_node_filters_the_processes(running) -> None:
    app, pilot = running
    await launch(app, pilot, ["sleep", "30"], node="n1")
    await launch(app, pilot, ["sleep", "30"], node="n2")
    nodes = app.dashboard.query_one(NodesTable)
    nodes.focus()
    nodes.move_cursor(row=0)
    await pilot.press("f")
    procs = app.dashboard.query_one(ProcsTable)
    await until(pilot, lambda: len(procs.rows) == 1)
    assert all(k.startswith("n1:") for k in procs.rows)
    assert not isinstance(app.screen, NodeDetail)


async def test_i_on_a_busy_process_shows_live_cpu_percent(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, BUSY)
    await pilot.press("i")
    await until(pilot, lambda: isinstance(app.screen, ProcDetail))
    await until(pilot, lambda: view(app, key).cpu_percent > 10.0, timeout=15)
    cpu = app.screen.query_one("#proc-cpu", Graph)
    await until(pilot, lambda: bool(cpu.values) and max(cpu.values) > 5.0)
    await until(pilot, lambda: "% now" in screen_text(app, "proc-facts"))
    assert "while :; do :; done" in screen_text(app, "proc-facts")
    await app.master.kill_procs([key])
    await until(pilot, lambda: not view(app, key).alive)
    assert view(app, key).cpu_percent == 0.0


async def test_state_history_follows_stop_and_continue(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, ["sleep", "60"])
    await pilot.press("enter")  # Enter on a process opens it
    await until(pilot, lambda: isinstance(app.screen, ProcDetail))
    await app.master.signal([key], "SIGSTOP")
    states = lambda: [s for _, s in app.master.cluster.proc_states(key)]  # noqa: E731
    await until(pilot, lambda: "stopped" in states())
    await app.master.signal([key], "SIGCONT")
    await until(pilot, lambda: states()[-1] in ("running", "sleeping"))
    await app.master.kill_procs([key])
    await until(pilot, lambda: states()[-1] == "killed")
    assert states()[0] == "running" and "stopped" in states()
    shown = lambda: screen_text(app, "proc-states")  # noqa: E731
    await until(pilot, lambda: "stopped" in shown() and "killed" in shown())


async def test_death_certificate_outlives_the_worker(running, workers: Workers) -> None:
    app, pilot = running
    key = await launch(app, pilot, CHATTY)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ProcDetail))

    def certified() -> bool:
        """the certificate with its 20 last log lines on screen"""
        found = app.screen.query("#proc-cert")  # none until the screen is composed
        return bool(found) and bool(found.first().display) and "line 30" in text_of(found.first())

    await until(pilot, certified, timeout=15)
    text = screen_text(app, "proc-cert")
    assert "exited 3" in text and "line 11" in text and "line 10\n" not in text + "\n"
    assert "user" in text and "system" in text and "max RSS" in text
    cert = app.master.cluster.certificate(key)
    assert cert is not None and cert.log_tail == tuple(f"line {i}" for i in range(11, 31))
    await pilot.press("escape")
    workers.stop()  # the worker and its logs go: the master keeps the certificate
    await until(pilot, lambda: app.master.cluster.node_state("n1") in ("lost", "left"), 15)
    app.dashboard._open_proc(key)
    await until(pilot, lambda: isinstance(app.screen, ProcDetail))
    await until(pilot, certified)
