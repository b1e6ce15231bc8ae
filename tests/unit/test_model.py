"""The cluster model: node state machine, process table, change publication."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from corral.master.model import (
    NODE_SERIES,
    STATE_HISTORY,
    TAIL_LINE_CHARS,
    TAIL_LINES,
    TREND_BUCKET,
    TREND_SPAN,
    Change,
    Cluster,
    Trend,
)
from corral.master.tails import TailKeeper
from corral.transport.messages import Metrics, NodeFacts, ProcInfo, ProcSample


def facts(name: str = "n1") -> NodeFacts:
    return NodeFacts(name=name, hostname="h", cpus=2, mem_total=100, boot_id="b")


def proc(pid: int, state: str = "running", launch: str = "L1", **kw: object) -> ProcInfo:
    kw.setdefault("started_at", 10.0)
    return ProcInfo(launch=launch, pid=pid, app="a", argv=["x"], state=state, **kw)  # type: ignore[arg-type]


def test_node_edges_follow_the_state_machine() -> None:
    c = Cluster()
    c.register(facts(), "127.0.0.1:1", [])
    assert c.set_node_state("n1", "suspect")
    assert c.set_node_state("n1", "lost")
    assert not c.set_node_state("n1", "suspect")  # lost -> suspect is not an edge
    c.beat("n1", Metrics(cpu_percent=5))
    assert c.node_state("n1") == "alive"
    assert [e.kind for e in c.events] == ["node.joined", "node.suspect", "node.lost", "node.back"]


def test_late_reply_does_not_resurrect_an_ended_process() -> None:
    c = Cluster()
    c.register(facts(), "a", [])
    c.update_proc("n1", proc(7, "exited", exit_code=3))
    c.update_proc("n1", proc(7, "running"))  # the launch reply, applied late
    view = c.proc("n1:7")
    assert view is not None and (view.state, view.reason) == ("exited", "exited 3")


def test_old_launch_news_does_not_replace_a_reused_pid() -> None:
    c = Cluster()
    c.register(facts(), "a", [])
    c.update_proc(
        "n1", ProcInfo(launch="new", pid=7, app="a", argv=["x"], state="running", started_at=20.0)
    )
    c.update_proc(
        "n1",
        ProcInfo(
            launch="old",
            pid=7,
            app="a",
            argv=["x"],
            state="killed",
            started_at=5.0,
            signal="SIGINT",
        ),
    )
    view = c.proc("n1:7")
    assert view is not None and view.launch == "new" and view.alive


def test_lost_node_shows_its_processes_lost_and_publishes_their_rows() -> None:
    c = Cluster()
    seen: list[Change] = []
    c.subscribe(seen.append)
    c.register(facts(), "a", [proc(1), proc(2, "exited", launch="L2", exit_code=0)])
    c.set_node_state("n1", "lost")
    assert c.proc("n1:1").state == "lost"  # type: ignore[union-attr]
    assert c.proc("n1:2").state == "exited"  # type: ignore[union-attr]
    assert seen[-1].procs == {"n1:1", "n1:2"} and seen[-1].nodes == {"n1"}


def test_reregistering_resyncs_without_relaunch_events() -> None:
    c = Cluster()
    c.register(facts(), "a", [proc(1), proc(2, launch="L2")])
    c.set_node_state("n1", "lost")
    seen: list[Change] = []
    c.subscribe(seen.append)
    c.register(facts(), "b", [proc(1)])
    assert seen[-1].removed_procs == {"n1:2"}
    assert [e.kind for e in seen[-1].events] == ["node.back"]
    assert c.proc("n1:1").state == "running"  # type: ignore[union-attr]


def test_beat_updates_only_changed_samples() -> None:
    c = Cluster()
    c.register(facts(), "a", [proc(1), proc(2, launch="L2")])
    seen: list[Change] = []
    c.subscribe(seen.append)
    c.beat(
        "n1",
        Metrics(),
        [ProcSample(1, "sleeping", 0.5, 0.1, 1000, 2000), ProcSample(2, "running", 0, 0, 0, 0)],
    )
    assert seen[-1].procs == {"n1:1"}
    view = c.proc("n1:1")
    assert view is not None and (view.state, view.max_rss) == ("sleeping", 2000)


# --- CPU %, graphs, state history, death certificates ------------------------------------
class Clock:
    """A settable time.time for the model."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def clocked(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    return clock


def test_cpu_percent_comes_from_two_samples_over_the_wall_time_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = clocked(monkeypatch)
    c = Cluster()
    c.register(facts(), "a", [proc(1, started_at=clock.now)])
    c.beat("n1", Metrics(), [ProcSample(1, "running", 1.0, 0.5, 10, 10)])
    assert c.proc("n1:1").cpu_percent == 0.0  # type: ignore[union-attr]  # one sample
    clock.now += 2.0
    seen: list[Change] = []
    c.subscribe(seen.append)
    c.beat("n1", Metrics(), [ProcSample(1, "running", 2.0, 0.7, 10, 10)])  # +1.2 s in 2 s
    assert c.proc("n1:1").cpu_percent == pytest.approx(60.0)  # type: ignore[union-attr]
    assert "n1:1" in seen[-1].procs
    clock.now += 1.0
    c.beat("n1", Metrics(), [ProcSample(1, "running", 2.0, 0.7, 10, 10)])  # idle: no CPU
    assert c.proc("n1:1").cpu_percent == 0.0  # type: ignore[union-attr]
    assert "n1:1" in seen[-1].procs  # 60 -> 0 is news even with the same CPU time
    clock.now += 1.0
    c.beat("n1", Metrics(), [ProcSample(1, "running", 3.0, 0.7, 10, 10)])
    assert c.proc("n1:1").cpu_percent == pytest.approx(100.0)  # type: ignore[union-attr]
    c.update_proc("n1", proc(1, "exited", exit_code=0, ended_at=clock.now))
    assert c.proc("n1:1").cpu_percent == 0.0  # type: ignore[union-attr]


def test_trend_keeps_ten_minutes_of_bucket_means_in_bounded_memory() -> None:
    t = Trend(2)
    assert t.capacity == int(TREND_SPAN / TREND_BUCKET)
    start = 1_000_000.0
    for i in range(7200):  # two hours at 1 Hz
        t.add(start + i, float(i % 10), 1.0)
    now = start + 7199
    cpu = t.series(0, now)
    assert len(cpu) == t.capacity
    assert all(v == pytest.approx(2.0) or v == pytest.approx(7.0) for v in cpu)  # 5 s means
    assert t.series(1, now) == [1.0] * t.capacity
    assert t.series(0, now + TREND_SPAN + TREND_BUCKET) == []  # all older than 10 minutes
    assert len(t._slots) == t.capacity - 1  # closed points; the open one is summed apart


def test_node_trend_has_each_series_and_forgets_nothing_it_should_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = clocked(monkeypatch)
    c = Cluster()
    c.register(facts(), "a", [])
    for _ in range(30):
        c.beat("n1", Metrics(cpu_percent=50.0, mem_used=40, load1=1.5, procs_alive=3))
        clock.now += 1.0
    trend = c.node_trend("n1")
    assert set(trend) == set(NODE_SERIES)
    assert trend["cpu"] == [50.0] * len(trend["cpu"]) and 6 <= len(trend["cpu"]) <= 7
    assert trend["mem"][-1] == 40.0 and trend["load"][-1] == 1.5 and trend["procs"][-1] == 3.0
    assert c.node_trend("nope") == {}


def test_state_history_records_what_an_operator_acts_on(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = clocked(monkeypatch)
    c = Cluster()
    c.register(facts(), "a", [proc(1, started_at=clock.now - 5)])
    for state in ("sleeping", "running", "sleeping", "stopped", "running"):
        clock.now += 1.0
        c.beat("n1", Metrics(), [ProcSample(1, state, 0.1, 0.0, 10, 10)])  # type: ignore[arg-type]
    clock.now += 1.0
    c.set_node_state("n1", "lost")
    clock.now += 1.0
    c.beat("n1", Metrics(), [ProcSample(1, "sleeping", 0.1, 0.0, 10, 10)])
    clock.now += 1.0
    c.update_proc("n1", proc(1, "killed", signal="SIGTERM", ended_at=clock.now))
    states = c.proc_states("n1:1")
    assert [s for _, s in states] == ["running", "stopped", "running", "lost", "sleeping", "killed"]
    start = 1_000_000.0
    assert [t - start for t, _ in states] == [-5.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def test_state_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = clocked(monkeypatch)
    c = Cluster()
    c.register(facts(), "a", [proc(1)])
    for i in range(500):
        clock.now += 1.0
        state = "stopped" if i % 2 else "running"
        c.beat("n1", Metrics(), [ProcSample(1, state, 0.1, 0.0, 10, 10)])  # type: ignore[arg-type]
    assert len(c.proc_states("n1:1")) == STATE_HISTORY


def test_certificate_keeps_the_end_the_states_and_the_log_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = clocked(monkeypatch)
    c = Cluster()
    c.register(facts(), "a", [proc(1, started_at=clock.now)])
    c.beat("n1", Metrics(), [ProcSample(1, "running", 0.0, 0.0, 10, 10)])
    clock.now += 1.0
    c.beat("n1", Metrics(), [ProcSample(1, "running", 0.5, 0.0, 5000, 9000)])
    assert c.certificate("n1:1") is None  # alive
    ended = proc(
        1, "exited", exit_code=2, ended_at=clock.now, cpu_user=0.75, cpu_sys=0.25, max_rss=9000
    )
    c.update_proc("n1", ended)
    cert = c.certificate("n1:1")
    assert cert is not None and cert.log_tail is None and cert.proc.reason == "exited 2"
    assert (cert.proc.cpu_user, cert.proc.cpu_sys, cert.proc.max_rss) == (0.75, 0.25, 9000)
    assert [s for _, s in cert.states] == ["running", "exited"]
    assert c.proc_trend("n1:1")["cpu"] == [25.0]  # the bucket's mean: 0 then 50
    seen: list[Change] = []
    c.subscribe(seen.append)
    lines = [f"line {i}" for i in range(30)] + ["x" * 5000]
    assert not c.set_log_tail("n1:1", "other-launch", lines)  # not this launch: ignored
    assert c.set_log_tail("n1:1", "L1", lines)
    cert = c.certificate("n1:1")
    assert cert is not None and cert.log_tail is not None
    assert len(cert.log_tail) == TAIL_LINES and cert.log_tail[0] == "line 11"
    assert len(cert.log_tail[-1]) == TAIL_LINE_CHARS
    assert seen[-1].procs == {"n1:1"}
    c.set_node_state("n1", "lost")  # the worker is gone: the certificate stays
    assert c.certificate("n1:1") == msgspec.structs.replace(cert, proc=c.proc("n1:1"))


def test_certificates_are_bounded_by_the_history_rule() -> None:
    c = Cluster(keep_ended=5)
    c.register(facts(), "a", [])
    for pid in range(1, 21):
        c.update_proc("n1", proc(pid, launch=f"L{pid}"))
        c.update_proc(
            "n1", proc(pid, "exited", launch=f"L{pid}", exit_code=0, ended_at=time.time())
        )
        c.set_log_tail(f"n1:{pid}", f"L{pid}", ["bye"])
    assert len(c._ended) == 5
    assert c.procs("n1") and len(c.procs("n1")) == 5
    kept = [c.certificate(p.key) for p in c.procs("n1")]
    assert all(k is not None and k.log_tail == ("bye",) for k in kept)
    assert not c._nodes["n1"].tracks  # no live process: no live track


class Piece(msgspec.Struct):
    data: bytes


async def test_tail_keeper_fetches_each_end_once_and_says_why_it_could_not() -> None:
    c = Cluster()
    c.register(facts(), "a", [proc(1, launch="L1"), proc(2, launch="L2")])
    asked: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def fetch(key: str, tail: int) -> Piece:
        asked.append((key, tail))
        if key == "n1:2":
            done.set()
            raise OSError("node n1 disconnected")
        return Piece(b"".join(b"out %d\n" % i for i in range(50)) + b"no newline")

    keeper = TailKeeper(c, fetch)
    c.update_proc("n1", proc(1, "exited", launch="L1", exit_code=0, ended_at=time.time()))
    c.update_proc("n1", proc(2, "killed", launch="L2", signal="SIGKILL", ended_at=time.time()))
    await asyncio.wait_for(done.wait(), 10)
    for _ in range(100):  # the failing fetch's error is recorded right after it raised
        if (cert := c.certificate("n1:2")) is not None and cert.log_error:
            break
        await asyncio.sleep(0.01)
    one, two = c.certificate("n1:1"), c.certificate("n1:2")
    assert one is not None and one.log_tail is not None
    assert one.log_tail[0] == "out 31" and one.log_tail[-1] == "no newline"
    assert two is not None and two.log_tail == () and "disconnected" in two.log_error
    assert sorted(asked) == [("n1:1", TAIL_LINES), ("n1:2", TAIL_LINES)]
    await keeper.close()
    c.update_proc("n1", proc(3, "exited", launch="L3", exit_code=0, ended_at=time.time()))
    assert len(asked) == 2  # closed: no more fetches
