"""The header fitted to the width, how to reach the master from another shell, and what q does.

Pilot tests on a real master with real workers, at 80 and 200 columns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from corral.master.control import Master, MasterConfig
from corral.tui.app import CorralApp
from corral.tui.widgets.dashboard import help_sections
from corral.tui.widgets.header import ClusterHeader, render_header
from corral.tui.widgets.help import key_rows
from tests.tui.conftest import HEARTBEAT, Workers, until

NODES = ("node1", "node2", "node3")
STATE_REACH = "CORRAL_STATE_DIR=/tmp/corral-demo-k2j4h5g6/state corral nodes"


def make_app(tmp_path: Path, workers: Workers, reach: str, demo: bool) -> CorralApp:
    config = MasterConfig(
        listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=HEARTBEAT
    )
    master = Master(config)
    return CorralApp(
        master,
        on_ready=lambda address: workers.spawn(address, master.token, *NODES),
        reach=reach,
        demo=demo,
    )


@pytest.fixture
def size() -> tuple[int, int]:
    return (80, 24)


@pytest.fixture
async def header(
    tmp_path: Path, workers: Workers, size: tuple[int, int], request: pytest.FixtureRequest
) -> AsyncIterator[tuple[ClusterHeader, Pilot[None]]]:
    reach, demo = getattr(request, "param", ("corral nodes", True))
    app = make_app(tmp_path, workers, reach, demo)
    async with app.run_test(size=size) as pilot:
        widget = app.dashboard.query_one(ClusterHeader)

        def all_alive() -> bool:
            """the three workers alive, in the header"""
            return widget.counts.get("alive") == len(NODES)

        await until(pilot, all_alive)
        yield widget, pilot


def shown(widget: ClusterHeader) -> str:
    text = widget.render()
    assert text.cell_len <= widget.content_size.width  # nothing cut off by the edge
    return text.plain


async def test_at_80_columns_the_counts_and_the_second_shell_stay_whole(
    header: tuple[ClusterHeader, Pilot[None]],
) -> None:
    widget, _ = header
    text = shown(widget)
    assert widget.content_size.width == 78
    assert "● 3 alive" in text and "0 running" in text
    assert "another shell: corral nodes" in text
    assert "…" not in text and "master " not in text  # the address went whole, not cut


@pytest.mark.parametrize("size", [(200, 40)])
async def test_at_200_columns_everything_shows(
    header: tuple[ClusterHeader, Pilot[None]], tmp_path: Path
) -> None:
    widget, _ = header
    text = shown(widget)
    for part in (
        " corral demo ",
        "nodes ● 3 alive  ◐ 0 suspect  ✕ 0 lost",
        "processes 0 running  0 ended  0 failed",
        "master 127.0.0.1:",
        "another shell: corral nodes",
        "q ends the demo and its programs",
    ):
        assert part in text, (part, text)


@pytest.mark.parametrize("header", [(STATE_REACH, True)], indirect=True)
@pytest.mark.parametrize("size", [(80, 24), (200, 40)])
async def test_when_a_variable_is_needed_the_header_names_the_state_dir(
    header: tuple[ClusterHeader, Pilot[None]], size: tuple[int, int]
) -> None:
    widget, _ = header
    text = shown(widget)
    assert "● 3 alive" in text
    if size[0] == 80:  # the command does not fit; the directory does
        assert "state /tmp/corral-demo-k2j4h5g6/state" in text and "CORRAL_STATE_DIR" not in text
    else:
        assert f"another shell: {STATE_REACH}" in text


@pytest.mark.parametrize("header", [("corral nodes", False)], indirect=True)
async def test_corral_master_says_nothing_of_a_demo(
    header: tuple[ClusterHeader, Pilot[None]],
) -> None:
    widget, _ = header
    text = shown(widget)
    assert text.startswith(" corral  ● 3 alive") and "demo" not in text


def test_every_width_is_filled_by_whole_sections() -> None:
    counts = {"alive": 3, "suspect": 1, "running": 4, "ended": 2, "failed": 1}
    sections = {
        "corral",
        "nodes",
        "alive",
        "suspect",
        "lost",
        "processes",
        "running",
        "ended",
        "failed",
        "master",
        "127.0.0.1:7070",
        "another",
        "shell:",
        "q",
        "ends",
        "the",
        "demo",
        "and",
        "its",
        "programs",
        "state",
    }
    last = 0
    for width in range(60, 240):
        text = render_header(counts, "127.0.0.1:7070", width, "corral nodes", True, "/s").plain
        assert len(text) <= width
        assert len(text) >= last  # more room never shows less
        words = {w for w in text.replace("│", " ").split() if not w.isdigit()} - {"●", "◐", "✕"}
        assert words <= sections | {"/s"}, (width, text)
        last = len(text)


def test_the_q_help_says_what_q_does_in_each_mode() -> None:
    (q,) = [desc for _, keys, desc in key_rows(help_sections()) if keys == "q"]
    assert "corral master: workers and programs keep running" in q
    assert "corral demo: ends the demo, stopping its workers and programs" in q


def test_masters_on_etcd_show_role_term_and_the_others() -> None:
    counts = {"alive": 3, "running": 4}
    ha = ("leader", "term 12", "m2, m3")
    wide = render_header(counts, "127.0.0.1:7070", 200, "corral nodes", ha=ha).plain
    assert "leader term 12 │ also m2, m3" in wide
    narrow = render_header(counts, "127.0.0.1:7070", 80, "corral nodes", ha=ha).plain
    assert "leader term 12" in narrow and "also" not in narrow  # the others go first
    assert "● 3 alive" in narrow
    standby = ("standby", "m1 leads (term 12)", "m1")
    assert "standby m1 leads (term 12)" in render_header(counts, "", 200, ha=standby).plain
    alone = render_header(counts, "127.0.0.1:7070", 200).plain
    assert "leader" not in alone and "standby" not in alone  # one master: nothing new
