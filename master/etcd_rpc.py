"""etcd's ``KV/Txn`` over gRPC, for the writers that carry a master's load.

The JSON gateway (`corral.master.etcd`) answers everything else; a write
of tickets or events goes to etcd's gRPC service on the same port instead.
Measured against etcd 3.4 on loopback (one client, 17 puts of 300 bytes a
transaction): 2.9 ms a transaction and 2.7 ms of etcd's CPU through the
gateway, which decodes JSON and calls its own gRPC service over a second
connection; 1.4-1.5 ms and 0.95 ms direct.  etcd's CPU is what bounds a
leader's submit rate on a small machine.

The transaction is given in the gateway's JSON forms (`put_op`,
`delete_op`, `term_compare`), so the two paths share one vocabulary, and
encoded here as etcd's protobuf messages (``rpc.proto``) by hand: the few
fields these writes use, no generated code.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import ssl
from pathlib import Path
from typing import Any

import grpc

from corral.master.etcd import EtcdError, _endpoint, _Urls

_b = binascii.a2b_base64  # the gateway's forms carry keys and values in base64

TXN = "/etcdserverpb.KV/Txn"

# rpc.proto's enums, by the names the JSON gateway spells
_TARGETS = {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4}
_RESULTS = {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3}
# Compare's target_union: the JSON name, its field number, whether it is bytes
_OPERANDS = {
    "version": (4, False),
    "create_revision": (5, False),
    "mod_revision": (6, False),
    "value": (7, True),
    "lease": (8, False),
}
# grpc backs off up to two minutes between reconnects by default: etcd back after an
# outage would stay unused that long.  A second at most, like the gateway's client.
_CHANNEL = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
LATE = 1.0  # seconds past grpc's deadline that a call's answer may still take to arrive
# gRPC codes after which the next endpoint may answer (the others are etcd refusing)
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64, two's complement in ten bytes
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _bytes(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: ``tag`` is its key byte (field number << 3 | 2)."""
    n = len(data)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + data


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""


_F1, _F2, _F3 = b"\x0a", b"\x12", b"\x1a"  # fields 1, 2 and 3, length-delimited


def _compare(c: dict[str, Any]) -> bytes:
    out = _int(1, _RESULTS[c.get("result", "EQUAL")]) + _int(
        2, _TARGETS[c.get("target", "VERSION")]
    )
    out += _bytes(_F3, _b(c["key"]))
    for name, (field, raw) in _OPERANDS.items():
        if name in c:
            if raw:
                out += _bytes(_varint(field << 3 | 2), _b(c[name]))
            else:
                out += _varint(field << 3) + _varint(int(c[name]))
    if "range_end" in c:
        out += _bytes(_varint(64 << 3 | 2), _b(c["range_end"]))
    return out


def _op(op: dict[str, Any]) -> bytes:
    """A ``RequestOp``'s contents: a put (field 2) or a delete of a range (field 3)."""
    put = op.get("requestPut")
    if put is not None:
        body = _bytes(_F1, _b(put["key"])) + _bytes(_F2, _b(put.get("value", "")))
        if "lease" in put:
            body += _int(3, int(put["lease"]))
        return _bytes(_F2, body)
    delete = op.get("requestDeleteRange")
    if delete is not None:
        body = _bytes(_F1, _b(delete["key"]))
        if "range_end" in delete:
            body += _bytes(_F2, _b(delete["range_end"]))
        return _bytes(_F3, body)
    raise ValueError(f"not a write etcd's txn takes here: {sorted(op)}")


def encode_txn(compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bytes:
    """A ``TxnRequest`` from the JSON gateway's forms of its compares and operations."""
    parts = [_bytes(_F1, _compare(c)) for c in compare]
    parts += [_bytes(_F2, _op(o)) for o in success]
    return b"".join(parts)


def _fields(buf: bytes) -> dict[int, int | bytes]:
    """A message's fields, the last of each number (enough for the replies read here)."""
    out: dict[int, int | bytes] = {}
    i, end = 0, len(buf)

    def varint() -> int:
        nonlocal i
        value, shift = 0, 0
        while True:
            if i >= end or shift > 63:
                raise ValueError("a varint runs past the message")
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while i < end:
        tag = varint()
        field, kind = tag >> 3, tag & 7
        if kind == 0:
            out[field] = varint()
        elif kind == 2:
            size = varint()
            if i + size > end:
                raise ValueError("a field runs past the message")
            out[field] = buf[i : i + size]
            i += size
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
        else:
            raise ValueError(f"wire type {kind}")
    if i != end:
        raise ValueError("a field runs past the message")
    return out


def decode_txn_reply(buf: bytes) -> dict[str, Any]:
    """``succeeded`` and the header's ``revision`` of a ``TxnResponse``, as the gateway
    spells them; ValueError for a message that is not one."""
    fields = _fields(buf)
    header = fields.get(1, b"")
    revision = _fields(header).get(3, 0) if isinstance(header, bytes) else 0
    return {"succeeded": fields.get(2, 0) == 1, "header": {"revision": str(revision)}}


def _system_roots() -> grpc.ChannelCredentials:
    """The CAs the gateway client trusts (the system's, as `ssl` finds them), not grpc's own."""
    cafile = ssl.get_default_verify_paths().cafile
    roots = Path(cafile).read_bytes() if cafile and Path(cafile).is_file() else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def _wake(loop: asyncio.AbstractEventLoop, answered: asyncio.Future[bytes], done: Any) -> None:
    """On one of grpc's threads: hand the finished call to the loop that awaits it."""
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, answered, done)


def _settle(answered: asyncio.Future[bytes], done: Any) -> None:
    if answered.done():  # the caller gave up
        return
    if done.cancelled():  # the channel was closed under it
        answered.cancel()
        return
    error = done.exception()
    if error is None:
        answered.set_result(done.result())
    else:
        answered.set_exception(error)


class EtcdRpc:
    """``KV/Txn`` calls to the first of ``urls`` that answers, one gRPC channel each.

    The calls are grpc's non-blocking ones (``future``), run by grpc's own
    threads, which hand each answer to the loop that waits for it.  Not
    grpc.aio: it ties its completion queue to the first event loop it
    meets, and a process that ran a second loop (a bench) had its calls
    answered on the closed one and waited for ever.  Blocking calls on a
    thread pool cost more (6-8 k submits/s against 7-9.5 k, measured).
    """

    def __init__(self, urls: _Urls, timeout: float = 1.0) -> None:
        self.urls = urls  # shared with the gateway client: the one that answered goes first
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}

    def _call(self, url: str) -> Any:
        channel = self._channels.get(url)
        if channel is None:
            end = _endpoint(url)
            target = f"{end.host}:{end.port}"
            if end.tls:
                channel = grpc.secure_channel(target, _system_roots(), _CHANNEL)
            else:
                channel = grpc.insecure_channel(target, _CHANNEL)
            self._channels[url] = channel
        return channel.unary_unary(TXN)

    async def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Run the transaction: ``{"succeeded": bool, "header": {"revision": ...}}``.

        EtcdError (one line) when no endpoint answers in time, or etcd refuses.
        """
        request = encode_txn(compare, success)
        loop = asyncio.get_running_loop()
        why = ""
        for url in self.urls.order():
            pending = self._call(url).future(request, timeout=self.timeout)
            answered: asyncio.Future[bytes] = loop.create_future()
            pending.add_done_callback(functools.partial(_wake, loop, answered))
            try:
                # grpc ends the call at its deadline; if its answer never reached this
                # loop all the same, the call ends here a little later, not never.
                answer = await asyncio.wait_for(answered, self.timeout + LATE)
            except TimeoutError:
                pending.cancel()
                why = f"cannot reach etcd at {url}: no answer in {self.timeout + LATE:g} s"
                continue
            except asyncio.CancelledError:
                pending.cancel()
                raise
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or e.code().name.lower()
                if code in _RETRY:
                    why = f"cannot reach etcd at {url}: {details}"
                    continue
                raise EtcdError(f"etcd at {url} refused: {details}") from None
            self.urls.answered(url)
            try:
                return decode_txn_reply(answer)
            except (ValueError, IndexError) as e:
                raise EtcdError(f"{url} sent a malformed txn answer: {e}") from None
        raise EtcdError(why)

    def close(self) -> None:
        """Close the channels: a call in flight ends at once, cancelled."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
