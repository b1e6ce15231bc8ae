"""The cluster model: node state machine, process table, change publication."""

from __future__ import annotations

from corral.master.model import Change, Cluster
from corral.transport.messages import Metrics, NodeFacts, ProcInfo


def facts(name: str = "n1") -> NodeFacts:
    return NodeFacts(name=name, hostname="h", cpus=2, mem_total=100, boot_id="b")


def proc(pid: int, state: str = "running", launch: str = "L1", **kw: object) -> ProcInfo:
    return ProcInfo(launch=launch, pid=pid, app="a", argv=["x"], state=state, started_at=10.0, **kw)  # type: ignore[arg-type]


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
    from corral.transport.messages import ProcSample

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
