"""Snapshots of the jobs view, a ticket and the submit dialog, over fixed jobs at fixed times.

The deterministic cluster of `tests.tui.cluster` (alpha and bravo alive,
charlie lost, each offering 14.4G to jobs) with six tickets written to the
job database before the master's job plane takes them up: one running on
alpha and bravo, two queued (one short of memory, one behind it), three
ended.  Review every change to ``__snapshots__/`` before accepting it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from corral.master.control import Master
from corral.master.tickets import Job, Replica, TicketStore
from corral.tui.app import CorralApp
from tests.tui.cluster import T0, GiB, MiB, build_master, clock

SIZES = [(80, 24), (160, 48)]


def _running(index: int, node: str, pid: int) -> Replica:
    return Replica(
        index=index,
        state="running",
        node=node,
        pid=pid,
        launch=f"L{pid}",
        key=f"job1.{index}.feed",
        started_at=T0 - 3720,
        cpu_user=3600.0,
        max_rss=1800 * MiB,
    )


def _ended(index: int, node: str, pid: int, **kw: object) -> Replica:
    fields: dict[str, object] = {
        "state": "exited",
        "exit_code": 0,
        "started_at": T0 - 900,
        "ended_at": T0 - 600,
        "cpu_user": 250.0,
        "max_rss": 310 * MiB,
    }
    fields.update(kw)
    return Replica(index=index, node=node, pid=pid, launch=f"L{pid}", **fields)  # type: ignore[arg-type]


JOBS = [
    Job(
        id=0,
        name="sim",
        app="simulate",
        argv=["./simulate", "--steps", "100000"],
        count=4,
        mem=2 * GiB,
        submitted_at=T0 - 3725,
        started_at=T0 - 3720,
        state="running",
        replicas=[
            _running(0, "alpha", 7001),
            _running(1, "alpha", 7002),
            _running(2, "bravo", 7003),
            _running(3, "bravo", 7004),
        ],
    ),
    Job(
        id=0,
        name="sweep",
        app="sweep.sh",
        argv=["./sweep.sh", "--grid", "fine"],
        count=2,
        mem=12 * GiB,
        spread=True,
        outputs=["out/*.csv"],
        submitted_at=T0 - 1800,
        replicas=[Replica(index=0), Replica(index=1)],
    ),
    Job(
        id=0,
        name="post",
        app="post",
        argv=["./post", "--all"],
        count=1,
        mem=100 * MiB,
        submitted_at=T0 - 60,
        replicas=[Replica(index=0)],
    ),
    Job(
        id=0,
        name="build",
        app="make",
        argv=["make", "-j8"],
        count=1,
        mem=1 * GiB,
        submitted_at=T0 - 905,
        started_at=T0 - 900,
        ended_at=T0 - 600,
        state="succeeded",
        replicas=[_ended(0, "alpha", 4100)],
    ),
    Job(
        id=0,
        name="crashy",
        app="crashy",
        argv=["./crashy", "--fast"],
        count=2,
        mem=512 * MiB,
        submitted_at=T0 - 35,
        started_at=T0 - 30,
        ended_at=T0 - 29,
        state="failed",
        reason="replica 1 on bravo:5152: killed by SIGSEGV, core dumped",
        replicas=[
            _ended(0, "alpha", 5151, started_at=T0 - 30, ended_at=T0 - 29),
            _ended(
                1,
                "bravo",
                5152,
                state="killed",
                exit_code=None,
                reason="killed by SIGSEGV, core dumped",
                started_at=T0 - 30,
                ended_at=T0 - 29,
            ),
        ],
    ),
    Job(
        id=0,
        name="oops",
        app="sleep",
        argv=["sleep", "3600"],
        count=1,
        mem=100 * MiB,
        submitted_at=T0 - 500,
        ended_at=T0 - 490,
        cancelled=True,
        state="cancelled",
        reason="cancelled",
        replicas=[
            Replica(index=0, state="cancelled", reason="cancelled while queued", ended_at=T0 - 490)
        ],
    ),
]


def with_jobs(master: Master, path: Path) -> Master:
    """The tickets above in the job database, then the master's jobs started on it."""
    store = TicketStore(path)
    for job in JOBS:
        store.add(job.__copy__())
    # The running job's replicas are placed; the master finds them as last seen.
    store.close()
    master.jobs.start(path)
    for rep in master.jobs.get(1).replicas:
        rep.reason = ""  # the workers would have said so at once: no "waiting for" here
    return master


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CorralApp]:
    master = with_jobs(build_master(tmp_path, monkeypatch), tmp_path / "jobs.db")
    yield CorralApp(master, start_master=False, clock=clock)
    master.events.close()


async def settle(pilot: Pilot[None], *keys: str) -> None:
    app = pilot.app
    assert isinstance(app, CorralApp)
    app.dashboard.address = "127.0.0.1:7070"
    await pilot.press(*keys)
    await pilot.pause(0.3)
    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


SCREENS = {
    "jobs": ("j",),
    "ticket": ("j", "enter"),
    "submit": ("j", "n", *"./simulate", "space", *"--steps", "space", *"10"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_jobs_screens(app: CorralApp, snap_compare, screen: str, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, *SCREENS[screen])

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_main_screen_shows_memory_held_by_jobs(app: CorralApp, snap_compare) -> None:
    """alpha and bravo hold 4.0G each of 14.4G for job 1's replicas."""
    assert snap_compare(app, terminal_size=(160, 48), run_before=settle)
