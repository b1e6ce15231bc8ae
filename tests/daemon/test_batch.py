"""LaunchBatch: a job's replicas on one node, started in one request, all or none."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from corral.daemon import procfs, records
from corral.daemon.forker import SPARES
from corral.transport import messages as m
from corral.transport.codec import FrameError, decode_body
from corral.transport.connection import CallError
from tests.daemon.harness import LAUNCHED, FakeMaster, wait_for


def batch(app: str, argv: list[str], *items: tuple[str, ...], **env: str):
    """A LaunchBatch maker; each item ``(key, workdir)``, or ``(key, workdir, "NAME=VALUE")``."""
    pairs = [
        m.LaunchItem(key, workdir, dict([own[0].split("=", 1)]) if own else {})
        for key, workdir, *own in items
    ]
    return lambda i: m.LaunchBatch(id=i, app=app, argv=argv, env=env, items=pairs)


def replicas(job: int, count: int) -> list[tuple[str, str]]:
    return [(f"job{job}.{i}", f"jobs/{job}/{i}") for i in range(count)]


async def launch_batch(master: FakeMaster, make) -> list[m.ProcInfo]:
    reply = await master.call(make)
    assert isinstance(reply, m.LaunchedBatch), reply
    for info in reply.procs:  # killed after the test, as single launches are
        st = procfs.stat(info.pid)
        if st is not None:
            LAUNCHED[info.pid] = st.start
    return reply.procs


async def status(master: FakeMaster) -> list[m.ProcInfo]:
    return (await master.call(lambda i: m.Status(id=i))).procs


async def test_a_batch_starts_every_launch_in_its_own_workdir(master, spawn_worker, root: Path):
    spawn_worker(master.port)
    await master.connected()
    items = [(key, workdir, f"B={key}") for key, workdir in replicas(7, 3)]
    procs = await launch_batch(master, batch("demo", ["sleep", "30"], *items, A="1", B="batch"))
    assert [p.key for p in procs] == ["job7.0", "job7.1", "job7.2"]
    assert len({p.pid for p in procs}) == 3 and len({p.launch for p in procs}) == 3
    assert all(p.state in ("running", "sleeping") for p in procs)
    app = root.resolve() / "apps/demo"
    for index, info in enumerate(procs):
        proc = psutil.Process(info.pid)
        await wait_for(lambda p=proc: p.cmdline() == ["sleep", "30"], what="the exec")
        assert proc.cwd() == str(app / f"jobs/7/{index}")
        env = proc.environ()
        assert (env["A"], env["B"]) == ("1", f"job7.{index}")  # its own B over the batch's
        assert os.getsid(info.pid) == info.pid
        assert (app / "logs" / f"{info.launch}.log").exists()
        record = root / "run" / f"{info.launch}.json"
        await wait_for(record.exists, what="its launch record")
    assert {p.pid: p.key for p in await status(master)} == {p.pid: p.key for p in procs}


async def test_more_launches_than_spares_all_start(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    count = SPARES + 3  # the rest wait for forks
    procs = await launch_batch(master, batch("demo", ["sleep", "30"], *replicas(1, count)))
    assert len({p.pid for p in procs}) == count
    for info in procs:
        await wait_for(lambda i=info: psutil.Process(i.pid).name() == "sleep", what="the exec")


async def test_the_same_keys_again_start_nothing_more(master, spawn_worker):
    spawn_worker(master.port)
    await master.connected()
    first = await launch_batch(master, batch("demo", ["sleep", "30"], *replicas(3, 2)))
    again = await launch_batch(master, batch("demo", ["sleep", "30"], *replicas(3, 2)))
    assert [p.pid for p in again] == [p.pid for p in first]
    # One key seen, one new: the first's process, and one more started.
    mixed = await launch_batch(master, batch("demo", ["sleep", "30"], *replicas(3, 3)[1:]))
    assert mixed[0].pid == first[1].pid
    assert mixed[1].pid not in {p.pid for p in first} and mixed[1].key == "job3.2"
    assert len(await status(master)) == 3
    # A single Launch with a batch's key finds its process too.
    single = await master.call(
        lambda i: m.Launch(id=i, app="demo", argv=["sleep", "30"], key="job3.0")
    )
    assert single.proc.pid == first[0].pid


async def test_a_refused_member_starts_none(master, spawn_worker, root: Path):
    spawn_worker(master.port)
    await master.connected()
    items = [("job5.0", "jobs/5/0"), ("job5.1", "../outside")]
    with pytest.raises(CallError, match=r"^bad working directory '\.\./outside'"):
        await master.call(batch("demo", ["sleep", "30"], *items))
    assert not (root / "apps/demo/jobs").exists()  # not even the first one's directory
    with pytest.raises(CallError, match="cannot execute 'no-such-prog'"):
        await master.call(batch("demo", ["no-such-prog"], *replicas(5, 2)))
    # One member's own variable that exec cannot pass on: none starts.
    items = [("job5.0", "jobs/5/0", "OK=1"), ("job5.1", "jobs/5/1", "X\0=1")]
    with pytest.raises(CallError, match=r"^bad environment variable 'X\\x00'"):
        await master.call(batch("demo", ["sleep", "30"], *items))
    assert not (root / "apps/demo/jobs").exists()
    assert await status(master) == []
    assert not (root / "run").exists() or list((root / "run").iterdir()) == []
    logs = root / "apps/demo/logs"
    assert not logs.exists() or list(logs.iterdir()) == []
    # The refused batches cost no spare: the next one starts at once.
    procs = await launch_batch(master, batch("demo", ["sleep", "30"], *replicas(5, 2)))
    assert len(procs) == 2


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ([], "bad launch batch: 0 launches, give 1 to 256"),
        ([("", "jobs/1/0")], "bad launch batch: every launch needs a request key"),
        ([("k", "jobs/1/0"), ("k", "jobs/1/1")], "bad launch batch: key 'k' given twice"),
        ([(f"k{i}", "") for i in range(m.MAX_BATCH + 1)], "bad launch batch: 257 launches"),
    ],
)
async def test_bad_batches_are_refused_with_one_line(master, spawn_worker, root: Path, items, why):
    spawn_worker(master.port)
    await master.connected()
    with pytest.raises(CallError) as refused:
        await master.call(batch("demo", ["sleep", "30"], *items))
    assert str(refused.value).startswith(why) and "\n" not in str(refused.value)
    assert await status(master) == []
    assert not (root / "apps").exists()


def test_a_batch_with_fields_of_the_wrong_type_is_a_bad_frame():
    for items in ([1, 2], [{"key": 7}], "jobs", [{"workdir": "jobs/1/0"}]):
        body = msgspec.msgpack.encode(
            {"type": "LaunchBatch", "id": 1, "app": "demo", "argv": ["true"], "items": items}
        )
        with pytest.raises(FrameError, match="bad message"):
            decode_body(body)


async def test_a_seed_killed_before_it_goes_ends_as_killed(supervisors, root: Path):
    """The pid is told before the seed, given its spec, may go: dying meanwhile is an end."""
    sup = supervisors()
    told: list[m.ProcInfo] = []

    def kill_first(infos: list[m.ProcInfo]) -> None:
        told.extend(infos)
        os.kill(infos[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while (st := procfs.stat(infos[0].pid)) is not None and st.state != "zombie":
            assert time.monotonic() < deadline, "the seed did not die"
            time.sleep(0.005)

    infos = await sup.launch_many(
        "demo", ["sleep", "30"], {}, [("a", "jobs/1/0", {}), ("b", "jobs/1/1", {})], told=kill_first
    )
    assert [i.pid for i in infos] == [i.pid for i in told]
    dead, alive = sup.procs[infos[0].launch], sup.procs[infos[1].launch]
    await wait_for(lambda: not dead.info.alive, what="the killed seed's end")
    assert (dead.info.state, dead.info.signal) == ("killed", "SIGKILL")
    (rec,) = [r for r in records.launch_records(root / "run") if r.key == "a"]
    assert rec.pid == infos[0].pid
    await wait_for(lambda: psutil.Process(infos[1].pid).name() == "sleep", what="the other's exec")
    assert alive.info.alive
