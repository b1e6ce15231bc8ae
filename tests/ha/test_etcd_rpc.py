"""Leader writes over etcd's gRPC service (`etcd_rpc`), read back through the gateway."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.ha import Etcd as EtcdServer
from bench.ha import etcd_binary
from corral.master.ca import CA
from corral.master.etcd import (
    Etcd,
    EtcdError,
    SyncEtcd,
    _Urls,
    b64,
    delete_op,
    put_op,
    term_compare,
)
from corral.master.etcd_rpc import EtcdRpc, decode_txn_reply, encode_txn

pytestmark = pytest.mark.timeout(60)


async def test_puts_deletes_and_the_guard_land_as_the_gateway_reads_them(
    etcd: EtcdServer,
) -> None:
    aio, sync = Etcd([etcd.url], writes=True), SyncEtcd([etcd.url])
    try:
        lease = await aio.grant(30)
        _, held = await aio.campaign("/t/leader", b"me", lease)
        assert held is not None
        values = {f"/t/k/{n:06d}": bytes(range(256)) * (n // 256 + 1) for n in (0, 1, 200, 70_000)}
        ops = [put_op(k, v) for k, v in values.items()] + [put_op("/t/leased", b"x", lease)]
        guard = [term_compare(held.create_revision, "/t/leader")]
        reply = await aio.txn(guard, ops)
        assert reply["succeeded"] and int(reply["header"]["revision"]) > held.create_revision
        found = {kv.key: kv.value for kv in sync.get("/t/k/", prefix=True)}
        assert found == values  # lengths past one varint byte, every byte value
        (leased,) = sync.get("/t/leased")
        assert leased.lease == lease
        gone = {"requestDeleteRange": {"key": b64("/t/k/"), "range_end": b64("/t/k0")}}
        assert (await aio.txn(guard, [gone]))["succeeded"]
        assert sync.get("/t/k/", prefix=True) == []
        # another term: the guard fails, nothing is written
        stale = [term_compare(held.create_revision + 1000, "/t/leader")]
        assert not (await aio.txn(stale, [put_op("/t/late", b"no")]))["succeeded"]
        assert sync.get("/t/late") == []
        assert (await aio.txn([], [delete_op("/t/leased")]))["succeeded"]
        assert sync.get("/t/leased") == []
    finally:
        sync.close()
        await aio.close()


async def test_refused_and_unreachable_are_one_line(etcd: EtcdServer) -> None:
    aio = Etcd([etcd.url], writes=True)
    try:
        too_many = [put_op(f"/t/{i}", b"") for i in range(200)]  # etcd takes 128 a txn
        with pytest.raises(EtcdError, match=r"refused: .*too many operations") as e:
            await aio.txn([], too_many)
        assert "\n" not in str(e.value)
    finally:
        await aio.close()
    nowhere = Etcd(["http://127.0.0.1:1"], timeout=0.5, writes=True)
    t0 = time.monotonic()
    try:
        with pytest.raises(EtcdError, match=r"127\.0\.0\.1:1") as e:
            await nowhere.txn([], [put_op("/t/x", b"")])
        assert "\n" not in str(e.value) and time.monotonic() - t0 < 5
    finally:
        await nowhere.close()


async def test_writes_resume_within_a_second_or_two_of_etcd_coming_back(
    etcd: EtcdServer,
) -> None:
    aio, sync = Etcd([etcd.url], timeout=0.5, writes=True), SyncEtcd([etcd.url])
    try:
        assert (await aio.txn([], [put_op("/t/before", b"1")]))["succeeded"]
        etcd.stop()  # waits for it to exit
        with pytest.raises(EtcdError, match="cannot reach"):
            await aio.txn([], [put_op("/t/during", b"1")])
        etcd.start()
        deadline = time.monotonic() + 10
        while True:  # grpc's reconnect backoff is capped at 1 s (etcd_rpc._CHANNEL)
            try:
                assert (await aio.txn([], [put_op("/t/after", b"1")]))["succeeded"]
                break
            except EtcdError:
                assert time.monotonic() < deadline, "writes did not resume"
        assert [kv.value for kv in sync.get("/t/after")] == [b"1"]
        assert sync.get("/t/during") == []
    finally:
        sync.close()
        await aio.close()


async def test_a_txn_whose_answer_never_reaches_the_loop_still_ends() -> None:
    """grpc's deadline is the first bound; should its answer never come back to the
    loop (a callback lost, a grpc thread stuck), the call ends all the same."""

    class Lost:  # a grpc future whose done callback is never run
        cancelled = False

        def add_done_callback(self, fn: object) -> None:
            pass

        def cancel(self) -> bool:
            Lost.cancelled = True
            return True

    class Method:
        def future(self, request: bytes, timeout: float) -> Lost:
            return Lost()

    rpc = EtcdRpc(_Urls(["http://127.0.0.1:1"]), timeout=0.2)
    rpc._call = lambda url: Method()  # type: ignore[method-assign]
    t0 = time.monotonic()
    with pytest.raises(EtcdError, match=r"127\.0\.0\.1:1: no answer in 1\.2 s") as e:
        await rpc.txn([], [put_op("/t/x", b"")])
    took = time.monotonic() - t0
    assert 1.1 < took < 3 and Lost.cancelled and "\n" not in str(e.value)


def test_encodes_a_txn_field_by_field() -> None:
    got = encode_txn(
        [term_compare(300, "/l")],
        [put_op("/a", b"v"), {"requestDeleteRange": {"key": b64("/b"), "range_end": b64("/c")}}],
    )
    compare = b"\x10\x01" + b"\x1a\x02/l" + b"\x28\xac\x02"  # target CREATE, key, create_revision
    put = b"\x12\x07" + b"\x0a\x02/a" + b"\x12\x01v"
    delete = b"\x1a\x08" + b"\x0a\x02/b" + b"\x12\x02/c"
    assert (
        got == b"\x0a" + bytes([len(compare)]) + compare + b"\x12\x09" + put + b"\x12\x0a" + delete
    )
    with pytest.raises(ValueError, match="not a write"):
        encode_txn([], [{"requestRange": {"key": b64("/a")}}])


def test_a_reply_is_read_or_refused_whole() -> None:
    header = b"\x18\x07"  # revision 7
    assert decode_txn_reply(b"\x0a\x02" + header + b"\x10\x01") == {
        "succeeded": True,
        "header": {"revision": "7"},
    }
    assert decode_txn_reply(b"")["succeeded"] is False
    for bad in (b"\x0a\x05\x18", b"\x10", b"\x10\xff", b"\x0f", b"\x10" + b"\xff" * 11):
        with pytest.raises(ValueError):
            decode_txn_reply(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_no_answer_breaks_the_reader(data: bytes) -> None:
    try:
        reply = decode_txn_reply(data)
    except ValueError:
        return
    assert isinstance(reply["succeeded"], bool)


async def test_an_https_etcd_is_trusted_as_the_system_trusts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both clients check etcd's certificate against the system's CAs (here SSL_CERT_FILE)."""
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server; .ci/run does)")
    ca = CA(tmp_path / "ca").open()
    ca.write_server_cert(["127.0.0.1"])
    tls = ca.dir
    server = EtcdServer(tmp_path / "etcd", (tls / "server.crt", tls / "server.key", tls / "ca.crt"))
    server.start()
    try:
        strange = Etcd([server.url], timeout=0.5, writes=True)  # the CA not trusted yet
        try:
            with pytest.raises(EtcdError, match="cannot reach") as e:
                await strange.txn([], [put_op("/t/x", b"no")])
            assert "\n" not in str(e.value)
        finally:
            await strange.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(tls / "ca.crt"))
        aio, sync = Etcd([server.url], writes=True), SyncEtcd([server.url])
        try:
            assert (await aio.txn([], [put_op("/t/x", b"yes")]))["succeeded"]
            assert [kv.value for kv in sync.get("/t/x")] == [b"yes"]
        finally:
            sync.close()
            await aio.close()
    finally:
        server.stop()
