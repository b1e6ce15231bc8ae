"""The process state machine: its table, and the edges real processes take through it.

The second half runs a real `Supervisor` in the test's event loop (its own
forker, real shims and programs, real signals) with `states.STRICT` on, and
records each edge it takes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import psutil
import pytest

from corral.daemon import procfs, records, states
from corral.daemon.states import EDGES, IllegalTransition
from corral.daemon.supervisor import Proc, Supervisor
from corral.transport.messages import ALIVE_STATES, ENDED_STATES, ProcInfo, ProcState
from tests.daemon.harness import ILLEGAL, ended, exited_pid, launch_in, wait_for
from tests.procs import gone

ALL: tuple[ProcState, ...] = get_args(ProcState)
BUSY = ("sh", "-c", "while :; do :; done")  # on a CPU (R) whenever it is not stopped


def info(state: ProcState) -> ProcInfo:
    return ProcInfo(launch="l", pid=1, app="a", argv=["x"], state=state, started_at=0.0)


# ---------------------------------------------------------------- the table


def test_the_table_speaks_of_the_wire_states_only():
    named = {s for edge in EDGES for s in edge}
    assert named == set(ALL)
    assert states.BORN in ALIVE_STATES


def test_every_edge_says_why():
    for edge, why in EDGES.items():
        assert why.strip(), edge


def test_only_the_living_stay_put():
    assert {before for before, after in EDGES if before == after} == set(ALIVE_STATES)


def test_an_end_is_final(monkeypatch):
    monkeypatch.setattr(states, "STRICT", True)
    for end in ENDED_STATES:
        assert [e for e in EDGES if e[0] == end] == []
        with pytest.raises(IllegalTransition):  # told once: not even "again"
            states.transition(info(end), end, lambda _: None)


def test_a_zombie_can_only_end():
    ahead = {after for before, after in EDGES if before == "zombie"}
    assert ahead == {"zombie", *ENDED_STATES}


def test_sampled_states_follow_each_other_freely():
    """Between two reads of /proc anything may happen, short of coming back from the dead."""
    for before in ALIVE_STATES:
        for after in ALL:
            if not (before == "zombie" and after in ("running", "sleeping", "stopped")):
                assert states.allowed(before, after), (before, after)


def test_every_state_is_reachable_from_birth():
    seen, todo = {states.BORN}, [states.BORN]
    while todo:
        here = todo.pop()
        for before, after in EDGES:
            if before == here and after not in seen:
                seen.add(after)
                todo.append(after)
    assert seen == set(ALL)


def test_transition_moves_along_an_edge():
    i = info("running")
    assert states.transition(i, "stopped", _no_log)
    assert i.state == "stopped"
    assert states.transition(i, "stopped", _no_log)  # read again, as it was
    assert i.state == "stopped"
    assert states.transition(i, "killed", _no_log)
    assert i.state == "killed"


def test_an_illegal_edge_raises_when_strict(monkeypatch):
    monkeypatch.setattr(states, "STRICT", True)
    lines: list[str] = []
    i = info("exited")
    with pytest.raises(IllegalTransition, match="exited -> running"):
        states.transition(i, "running", lines.append)
    assert i.state == "exited"
    assert len(lines) == 1 and ILLEGAL in lines[0]


def test_an_illegal_edge_is_refused_and_logged_once_otherwise(monkeypatch):
    monkeypatch.setattr(states, "STRICT", False)
    monkeypatch.setattr(states, "_reported", set())
    lines: list[str] = []
    for _ in range(3):
        i = info("zombie")
        assert not states.transition(i, "sleeping", lines.append)
        assert i.state == "zombie"
    assert not states.transition(info("unknown"), "exited", lines.append)
    assert [line.split(" (")[0] for line in lines] == [
        f"{ILLEGAL} zombie -> sleeping",
        f"{ILLEGAL} unknown -> exited",
    ]


def _no_log(line: str) -> None:
    raise AssertionError(f"unexpected log line: {line}")


# ---------------------------------------------------------------- real processes

Edge = tuple[ProcInfo, ProcState, ProcState]  # whose (this daemon's object), before, after


@pytest.fixture
def edges(monkeypatch) -> list[Edge]:
    """Every state change made through `states.transition`, in order."""
    taken: list[Edge] = []
    real = states.transition

    def spy(i: ProcInfo, to: ProcState, log: Callable[[str], None]) -> bool:
        before = i.state
        moved = real(i, to, log)
        if before != to:
            taken.append((i, before, to))
        return moved

    monkeypatch.setattr(states, "transition", spy)
    return taken


async def reads(sup: Supervisor, proc: Proc, state: ProcState) -> None:
    """Wait until a refresh finds ``proc`` in ``state``."""
    await wait_for(lambda: sup.refresh(proc).state == state, what=state)


def path(edges: list[Edge], proc: Proc) -> list[ProcState]:
    """The states ``proc`` went through, from its birth: one edge at a time."""
    mine = [(before, after) for i, before, after in edges if i is proc.info]
    walked: list[ProcState] = [states.BORN]
    for before, after in mine:
        assert before == walked[-1] and states.allowed(before, after)
        walked.append(after)
    return walked


async def test_a_program_that_exits(supervisors, edges):
    sup = supervisors()
    proc = await launch_in(sup, "sh", "-c", "sleep 0.2; exit 3")
    await reads(sup, proc, "sleeping")
    end = await ended(proc)
    assert (end.state, end.exit_code, end.reason) == ("exited", 3, "exited 3")
    walked = path(edges, proc)
    assert walked[:2] == ["running", "sleeping"] and walked[-1] == "exited"


async def test_a_program_killed(supervisors, edges):
    sup = supervisors()
    proc = await launch_in(sup, "sleep", "30")
    await reads(sup, proc, "sleeping")
    assert sup.signal(proc.rec.pid, "SIGKILL")[0]
    end = await ended(proc)
    assert (end.state, end.reason) == ("killed", "killed by SIGKILL")
    assert path(edges, proc)[-1] == "killed"


async def test_stopped_and_continued(supervisors, edges):
    sup = supervisors()
    proc = await launch_in(sup, *BUSY)
    pid = proc.rec.pid
    await reads(sup, proc, "running")
    assert sup.signal(pid, "SIGSTOP")[0]
    await reads(sup, proc, "stopped")
    assert procfs.stat(pid).state == "stopped"
    assert sup.signal(pid, "SIGCONT")[0]
    await reads(sup, proc, "running")
    assert sup.signal(pid, "SIGKILL")[0]
    assert (await ended(proc)).state == "killed"
    walked = path(edges, proc)
    stop = walked.index("stopped")
    assert walked[stop + 1] == "running" and walked[-1] == "killed"


async def test_adopted_after_a_restart(supervisors, edges, root: Path):
    first = supervisors()
    proc = await launch_in(first, "sleep", "30")
    launch = proc.rec.launch
    await wait_for((root / "run" / f"{launch}.json").exists, what="the shim's launch record")
    again = supervisors().procs[launch]  # the first one is closed: a restart
    assert again is not proc and again.info.state == "sleeping"
    os.killpg(again.rec.pid, signal.SIGTERM)
    end = await ended(again)
    assert (end.state, end.signal) == ("killed", "SIGTERM")
    assert path(edges, again) == ["running", "sleeping", "killed"]


async def test_ended_while_no_daemon_watched(supervisors, edges, root: Path):
    first = supervisors()
    proc = await launch_in(first, "sleep", "30")
    launch = proc.rec.launch
    await wait_for((root / "run" / f"{launch}.json").exists, what="the shim's launch record")
    first.close()
    os.killpg(proc.rec.pid, signal.SIGKILL)
    await wait_for((root / "run" / f"{launch}.exit").exists, what="the shim's exit record")
    again = supervisors().procs[launch]
    assert (again.info.state, again.info.signal) == ("killed", "SIGKILL")
    assert path(edges, again) == ["running", "killed"]


async def test_unknown_when_its_shim_was_killed(supervisors, edges):
    sup = supervisors()
    proc = await launch_in(sup, "sleep", "30")
    shim = psutil.Process(proc.rec.pid).ppid()
    os.kill(shim, signal.SIGKILL)
    await wait_for(lambda: gone(shim), what="the shim's end")
    os.killpg(proc.rec.pid, signal.SIGKILL)
    end = await ended(proc)
    assert (end.state, end.reason) == ("unknown", "ended while unobserved")
    assert path(edges, proc)[-1] == "unknown"


async def test_unknown_from_another_boot_and_persisted(supervisors, edges, root: Path):
    run = root / "run"
    run.mkdir()
    rec = records.LaunchRecord(
        launch="20260101-000000.000-boot",
        pid=exited_pid(),
        shim=exited_pid(),
        shim_start=1,
        app="demo",
        argv=["x"],
        started_at=time.time() - 60,
        start=1,
        boot_id="another-boot",
    )
    records.save_launch(run, rec)
    proc = supervisors().procs[rec.launch]
    assert proc.info.state == "unknown"
    assert path(edges, proc) == ["running", "unknown"]
    saved = records.load_launch(run / f"{rec.launch}.json")
    assert saved is not None and saved.unknown_at == proc.info.ended_at
    # The next daemon reads the mark: unknown again, the same end time.
    again = supervisors().procs[rec.launch]
    assert (again.info.state, again.info.ended_at) == ("unknown", proc.info.ended_at)


async def test_a_second_end_is_refused_and_told_once(supervisors, edges, monkeypatch):
    """A late or repeated exit record (a race) changes nothing and is not published again."""
    sup = supervisors()
    told: list[ProcInfo] = []
    sup.on_change = told.append
    proc = await launch_in(sup, "sh", "-c", "exit 3")
    await ended(proc)
    assert [i.state for i in told] == ["exited"]
    ex = records.load_exit(sup.run_dir, proc.rec.launch)
    assert ex is not None
    lines: list[str] = []
    sup.log = lines.append
    with pytest.raises(IllegalTransition):
        sup._settle(proc, ex)  # strict, as in every test
    monkeypatch.setattr(states, "STRICT", False)
    monkeypatch.setattr(states, "_reported", set())
    sup._settle(proc, ex)
    sup._set_unknown(proc, time.time(), persist=True)
    assert (proc.info.state, proc.info.exit_code) == ("exited", 3)
    assert [i.state for i in told] == ["exited"]
    assert [line.split(" (")[0] for line in lines] == [
        f"{ILLEGAL} exited -> exited",
        f"{ILLEGAL} exited -> exited",
        f"{ILLEGAL} exited -> unknown",
    ]
    saved = records.launch_records(sup.run_dir)
    assert [r.unknown_at for r in saved] == [None]  # not marked unknown after all
