"""Placement and the queue (`master.scheduler`), and tickets (`master.tickets`): pure."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from corral.master.scheduler import Demand, Scheduler
from corral.master.tickets import LAUNCH_FAILED, Job, Replica, TicketStore, derive

M = 1 << 20


def cluster(**offers: int) -> Scheduler:
    s = Scheduler()
    for name, mb in offers.items():
        s.set_node(name, mb * M, "alive")
    return s


def free(s: Scheduler) -> dict[str, int]:
    return {n: slot.free // M for n, slot in s.slots.items()}


def test_best_fit_fills_the_fullest_node_that_fits() -> None:
    s = cluster(big=1000, mid=300, small=150)
    s.enqueue(Demand(1, 1, 100 * M))
    assert s.drain() == [(Demand(1, 1, 100 * M), ["small"])]
    s.enqueue(Demand(2, 3, 100 * M))
    # small has 50 left: mid (300) is now the tightest that fits, and takes all three
    assert s.drain()[0][1] == ["mid", "mid", "mid"]
    assert free(s) == {"big": 1000, "mid": 0, "small": 50}


def test_spread_puts_one_replica_a_node_and_waits_for_nodes() -> None:
    s = cluster(a=1000, b=1000)
    s.enqueue(Demand(1, 3, 10 * M, spread=True))
    assert s.drain() == []
    assert s.reason(1) == (
        "needs 3 x 10M on separate nodes; a 1000M free of 1000M, b 1000M free of 1000M"
    )
    s.set_node("c", 20 * M, "alive")  # a third node joins
    placed = s.drain()
    assert sorted(placed[0][1]) == ["a", "b", "c"]


def test_all_or_nothing_and_strict_fifo() -> None:
    s = cluster(a=250, b=250)
    s.enqueue(Demand(1, 4, 100 * M))
    s.enqueue(Demand(2, 2, 100 * M))
    s.enqueue(Demand(3, 1, 10 * M))  # would fit, but waits behind job 2
    assert [d.job for d, _ in s.drain()] == [1]
    assert free(s) == {"a": 50, "b": 50}  # nothing held for job 2: all or nothing
    assert s.position(2) == 1 and s.position(3) == 2
    assert s.reason(2) == "needs 2 x 100M; a 50M free of 250M, b 50M free of 250M"
    assert s.reason(3) == "behind job 2"
    s.release("a", 100 * M)
    assert s.drain() == []  # 150 on a, 50 on b: still not two
    s.release("b", 100 * M)
    assert [(d.job, nodes) for d, nodes in s.drain()] == [(2, ["a", "b"]), (3, ["a"])]


def test_lost_nodes_take_nothing_and_come_back() -> None:
    s = cluster(a=100, b=100)
    assert s.set_node("b", 100 * M, "lost")
    s.enqueue(Demand(1, 2, 100 * M))
    assert s.drain() == []
    assert s.reason(1) == "needs 2 x 100M; a 100M free of 100M, b lost"
    assert s.set_node("b", 100 * M, "alive")  # back: worth a drain
    assert not s.set_node("b", 100 * M, "alive")  # no change: not worth one
    assert sorted(s.drain()[0][1]) == ["a", "b"]


def test_never_fits_names_every_offer_but_an_empty_cluster_waits() -> None:
    assert Scheduler().never_fits(Demand(1, 1, 10 * M)) == ""
    s = cluster(a=250, b=250)
    assert s.never_fits(Demand(1, 1, 10 << 30)) == (
        "can never run: needs 1 x 10G; a offers 250M, b offers 250M"
    )
    assert s.never_fits(Demand(1, 100, 200 * M)) == ""  # nodes may join: it waits


def test_try_place_changes_nothing() -> None:
    s = cluster(a=250, b=100)
    assert s.try_place(Demand(0, 3, 100 * M)) == ["b", "a", "a"]
    assert free(s) == {"a": 250, "b": 100}
    assert s.try_place(Demand(0, 4, 100 * M)) is None


def test_holds_on_a_node_not_yet_registered_count_once_it_is() -> None:
    s = Scheduler()
    s.hold("a", 200 * M)  # a replica found in the store before its node registered
    s.set_node("a", 250 * M, "alive")
    assert free(s) == {"a": 50}
    s.enqueue(Demand(1, 1, 100 * M))
    assert s.drain() == []


def test_random_workload_never_overcommits() -> None:
    rng = random.Random(7)
    s = Scheduler()
    offers = {f"n{i}": rng.randint(1, 64) * 256 * M for i in range(50)}
    for name, offer in offers.items():
        s.set_node(name, offer, "alive")
    running: list[tuple[str, int]] = []
    for job in range(1, 2000):
        s.enqueue(Demand(job, rng.randint(1, 8), rng.randint(1, 2048) * M, rng.random() < 0.2))
        for demand, nodes in s.drain():
            assert len(nodes) == demand.replicas
            if demand.spread:
                assert len(set(nodes)) == len(nodes)
            running.extend((n, demand.mem) for n in nodes)
        while running and rng.random() < 0.5:
            node, mem = running.pop(rng.randrange(len(running)))
            s.release(node, mem)
        held: dict[str, int] = {}
        for node, mem in running:
            held[node] = held.get(node, 0) + mem
        for name, slot in s.slots.items():
            assert slot.held == held.get(name, 0) <= slot.offer
        ready = s._ready
        assert ready == sorted((slot.free, n) for n, slot in s.slots.items())


# --- tickets ---------------------------------------------------------------------------


def job(replicas: list[Replica], **kw: object) -> Job:
    return Job(
        id=1,
        name="j",
        app="j",
        argv=["x"],
        count=len(replicas),
        mem=M,
        submitted_at=1.0,
        replicas=replicas,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("states", "want"),
    [
        (["pending", "pending"], "queued"),
        (["launching", "running"], "running"),
        (["exited", "exited"], "succeeded"),
        (["exited", "lost"], "failed"),
        (["running", LAUNCH_FAILED], "failed"),
    ],
)
def test_a_jobs_state_follows_its_replicas(states: list[str], want: str) -> None:
    reps = [Replica(index=i, state=s, node="n", exit_code=0) for i, s in enumerate(states)]
    assert derive(job(reps))[0] == want


def test_a_failed_job_names_its_replica() -> None:
    reps = [
        Replica(index=0, state="exited", node="n1", pid=5, exit_code=0),
        Replica(index=1, state="exited", node="n2", pid=7, exit_code=3, reason="exited 3"),
    ]
    assert derive(job(reps)) == ("failed", "replica 1 on n2:7: exited 3")


def test_the_store_keeps_open_jobs_in_order_and_ids_grow(tmp_path: Path) -> None:
    store = TicketStore(tmp_path / "jobs.db")
    a = job([Replica(index=0)])
    b = job([Replica(index=0)])
    store.add(a)
    store.add(b)
    assert (a.id, b.id) == (1, 2)
    a.replicas[0].state, a.state = "exited", "succeeded"
    a.replicas[0].exit_code = 0
    store.save(a)
    store.close()
    again = TicketStore(tmp_path / "jobs.db")
    assert [j.id for j in again.open_jobs()] == [2]
    assert [j.id for j in again.ended(10)] == [1]
    assert again.get(1) == a
    assert again.next_id() == 3
    assert (tmp_path / "jobs.db").stat().st_mode & 0o777 == 0o600
