"""The one etcd client and the ticket store on it, against a real etcd."""

from __future__ import annotations

import asyncio

import pytest

from bench.ha import Etcd as EtcdServer
from corral.master.etcd import ELECTION_KEY, Etcd, EtcdError, SyncEtcd, parse_urls, put_op
from corral.master.etcd_store import NEXT, EtcdTicketStore
from corral.master.tickets import Job, Replica, StoreError

pytestmark = pytest.mark.timeout(60)


def _job(name: str) -> Job:
    return Job(
        id=0, name=name, app="sleep", argv=["sleep", "1"], count=1, mem=1, spread=False,
        outputs=[], submitted_at=0.0, replicas=[Replica(index=0)],
    )  # fmt: skip


async def test_campaign_term_and_lease(etcd: EtcdServer) -> None:
    a, b = Etcd([etcd.url]), Etcd([etcd.url])
    try:
        la, lb = await a.grant(5), await b.grant(5)
        won, held = await a.campaign(ELECTION_KEY, b"a", la)
        assert won and held is not None
        term = held.create_revision
        lost, holder = await b.campaign(ELECTION_KEY, b"b", lb)
        assert not lost and holder is not None
        assert holder.value == b"a" and holder.create_revision == term
        assert await a.keepalive(la) > 0
        await a.revoke(la)  # the key goes with the lease: b wins, with a larger term
        assert await a.keepalive(la) == 0
        won, held = await b.campaign(ELECTION_KEY, b"b", lb)
        assert won and held is not None and held.create_revision > term
    finally:
        await a.close()
        await b.close()


async def test_store_keeps_order_and_refuses_an_old_term(etcd: EtcdServer) -> None:
    sync, aio = SyncEtcd([etcd.url]), Etcd([etcd.url])
    try:
        lease = await aio.grant(30)
        _, held = await aio.campaign(ELECTION_KEY, b"one", lease)
        assert held is not None
        store = EtcdTicketStore(sync, held.create_revision, aio)
        ids = await asyncio.gather(*(store.add_async(_job(f"j{i}")) for i in range(5)))
        assert ids == [1, 2, 3, 4, 5]  # one transaction, the calls' order
        assert [j.name for j in store.open_jobs()] == ["j0", "j1", "j2", "j3", "j4"]
        done = store.get(2)
        assert done is not None
        done.state = "succeeded"
        store.save(done)
        assert [j.id for j in store.open_jobs()] == [1, 3, 4, 5]
        assert [j.id for j in store.ended(10)] == [2]
        assert EtcdTicketStore(sync, held.create_revision).next_id() == 6  # read back
        await aio.revoke(lease)  # another master leads: the old term writes nothing
        won, _ = await aio.campaign(ELECTION_KEY, b"two", await aio.grant(30))
        assert won
        with pytest.raises(StoreError, match=r"term \d+ is over"):
            store.save(_job("late"))
        with pytest.raises(StoreError, match=r"term \d+ is over"):
            await store.add_async(_job("late"))
        assert len(store.open_jobs()) == 4
    finally:
        sync.close()
        await aio.close()


async def test_writes_past_etcds_transaction_limits_are_split_and_keep_order(
    etcd: EtcdServer,
) -> None:
    """etcd takes at most 128 operations a transaction: 300 new jobs, then 300 ended at once."""
    sync, aio = SyncEtcd([etcd.url]), Etcd([etcd.url])
    try:
        _, held = await aio.campaign(ELECTION_KEY, b"one", await aio.grant(30))
        assert held is not None
        store = EtcdTicketStore(sync, held.create_revision, aio)
        assert store.writes_later
        jobs = [_job(f"j{i}") for i in range(300)]
        ids = await asyncio.gather(*(store.add_async(j) for j in jobs))
        assert ids == list(range(1, 301))
        assert [j.name for j in store.open_jobs()] == [f"j{i}" for i in range(300)]
        for job in jobs:
            job.state = "succeeded"
        first, second = jobs[:150], jobs[150:]
        await asyncio.gather(store.save_async(*first), store.save_async(*second))
        assert store.open_jobs() == []
        assert [j.id for j in store.ended(1000)] == ids
        assert all(j.state == "succeeded" for j in store.ended(1000))
        assert EtcdTicketStore(sync, held.create_revision).next_id() == 301
        # Two writes in flight may commit out of turn and leave "next" behind:
        # a new leader goes by the largest id it finds.
        assert sync.txn([], [put_op(NEXT, b"120")])
        assert EtcdTicketStore(sync, held.create_revision).next_id() == 301
    finally:
        sync.close()
        await aio.close()


async def test_a_ticket_saved_twice_meanwhile_is_written_as_last_saved(etcd: EtcdServer) -> None:
    sync, aio = SyncEtcd([etcd.url]), Etcd([etcd.url])
    try:
        _, held = await aio.campaign(ELECTION_KEY, b"one", await aio.grant(30))
        assert held is not None
        store = EtcdTicketStore(sync, held.create_revision, aio)
        job = _job("twice")
        await store.add_async(job)
        job.reason = "first"
        one = asyncio.ensure_future(store.save_async(job))
        await asyncio.sleep(0)  # the first write is in flight
        job.reason = "second"
        await asyncio.gather(one, store.save_async(job))
        stored = store.get(job.id)
        assert stored is not None and stored.reason == "second"
    finally:
        sync.close()
        await aio.close()


async def test_unreachable_and_bad_urls_are_one_line() -> None:
    client = Etcd(["http://127.0.0.1:1"])
    try:
        with pytest.raises(EtcdError) as e:
            await client.status()
        assert "127.0.0.1:1" in str(e.value) and "\n" not in str(e.value)
    finally:
        await client.close()
    with pytest.raises(ValueError, match="bad URL"):
        parse_urls("ftp://x")
    with pytest.raises(ValueError, match="at least one URL"):
        parse_urls(" , ")
    assert parse_urls("http://a:1/, http://b:2") == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (b"garbage\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "is not etcd's v3 gateway"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", "an answer of"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "failed"),  # cut short
        (None, "did not answer in time"),  # reads the request, says nothing
    ],
)
async def test_a_peer_that_is_not_etcd_is_one_line_and_nothing_hangs(
    reply: bytes | None, said: str
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if reply is None:
            await reader.read()  # until the client gives up and closes
        writer.write(reply or b"")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Etcd([f"http://127.0.0.1:{port}"], timeout=0.5)
    try:
        with pytest.raises(EtcdError) as e:
            await client.status()
        message = str(e.value)
        assert said in message and f"127.0.0.1:{port}" in message and "\n" not in message
    finally:
        await client.close()
        server.close()
