"""The one etcd client of corral: etcd's v3 JSON gateway over HTTP/1.1.

Only what standby masters need: leases (grant, keep alive, revoke), a
campaign (create the election key with our lease if nobody holds it),
reads, and transactions guarded by the term.  The term is the election
key's create revision: a new leader always has a larger one, and a write
guarded by ``create_revision(election key) == term`` fails once another
master has won.

Keys and values travel base64-encoded; etcd's 64-bit integers travel as
JSON strings.  Every failure (a refused connection, a timeout, an answer
that is not etcd's) is an `EtcdError` with one line naming the URL and
the reason.  `Etcd` is the async client (election, the masters' list);
`SyncEtcd` the blocking one the ticket store reads with (loopback round
trips of a millisecond or two).

The HTTP is our own, a few dozen lines over asyncio streams (and the
standard library's `http.client` for the blocking client): JSON POSTs on
kept-alive connections, one request at a time each.  httpx did the same
job at about 4 ms more a request on loopback, which made an etcd write
6-9 ms where etcd itself answers in 2-3.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    from corral.master.etcd_rpc import EtcdRpc

PREFIX = "/corral/"
ELECTION_KEY = PREFIX + "leader"
MASTERS_PREFIX = PREFIX + "masters/"


class EtcdError(Exception):
    """etcd could not be reached or refused a request; the message says which and why."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw).decode()


def parse_urls(text: str) -> list[str]:
    """``URL[,URL...]`` -> the list; ValueError (one line) for a malformed one."""
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    if not urls:
        raise ValueError("--etcd: give at least one URL, e.g. http://127.0.0.1:2379")
    for url in urls:
        try:
            _endpoint(url)
        except ValueError as e:
            raise ValueError(f"--etcd: bad URL {url!r}: {e}") from None
    return urls


@dataclass(frozen=True)
class _Endpoint:
    host: str
    port: int
    tls: bool


def _endpoint(url: str) -> _Endpoint:
    """``http[s]://HOST[:PORT]`` -> where to connect; ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(str(e)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://HOST:PORT")
    if parts.path.strip("/") or parts.query:
        raise ValueError("give the endpoint alone, with no path")
    tls = parts.scheme == "https"
    return _Endpoint(parts.hostname, port or (443 if tls else 80), tls)


def kvs(reply: dict[str, Any]) -> list[KeyValue]:
    """The key-values of a range reply."""
    return [
        KeyValue(
            key=unb64(kv["key"]).decode(),
            value=unb64(kv.get("value", "")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )
        for kv in reply.get("kvs", [])
    ]


# --- request bodies ---------------------------------------------------------------
def put_op(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"requestPut": body}


def delete_op(key: str) -> dict[str, Any]:
    return {"requestDeleteRange": {"key": b64(key)}}


def range_body(
    key: str, prefix: bool = False, limit: int = 0, descend: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    if limit:
        body["limit"] = str(limit)
    if descend:
        body["sort_order"] = "DESCEND"
        body["sort_target"] = "KEY"
    return body


def term_compare(term: int, key: str = ELECTION_KEY) -> dict[str, Any]:
    """The guard of every leader write: the election key is still the one we created."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(term)}


def campaign_body(key: str, value: bytes, lease: int) -> dict[str, Any]:
    """Create ``key`` with ``lease`` if it does not exist; else read who holds it."""
    return {
        "compare": [{"key": b64(key), "target": "CREATE", "create_revision": "0"}],
        "success": [put_op(key, value, lease)],
        "failure": [{"requestRange": {"key": b64(key)}}],
    }


class _Urls:
    """The endpoints, tried in turn: the one that last answered first."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.good = 0

    def order(self) -> list[str]:
        n = len(self.urls)
        return [self.urls[(self.good + i) % n] for i in range(n)]

    def answered(self, url: str) -> None:
        self.good = self.urls.index(url)


def _why(url: str, e: BaseException) -> str:
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"etcd at {url} did not answer in time"
    if isinstance(e, ConnectionRefusedError):
        return f"cannot reach etcd at {url}: connection refused"
    if isinstance(e, OSError) and not isinstance(e, ConnectionError):
        return f"cannot reach etcd at {url}: {e.strerror or e}"
    return f"etcd at {url} failed: {str(e) or type(e).__name__}"


def _answer(url: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise EtcdError(f"{url} is not etcd's v3 gateway (HTTP {status})") from None
    if not isinstance(data, dict):
        raise EtcdError(f"{url} is not etcd's v3 gateway (HTTP {status})")
    if status != 200:
        raise EtcdError(f"etcd at {url} refused: {data.get('error') or data.get('message')}")
    result = data.get("result", data)  # streaming calls (keepalive) wrap their answer
    return result if isinstance(result, dict) else {}


MAX_BODY = 64 << 20  # an answer larger than this is not one we asked for
_HEADERS = b"Content-Type: application/json\r\nAccept: application/json\r\n"


class _AsyncConnection:
    """One kept-alive HTTP/1.1 connection to an endpoint: one request at a time."""

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.url = url
        self.host = urlsplit(url).netloc.encode()  # the Host header
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> _AsyncConnection:
        end = _endpoint(url)
        context = ssl.create_default_context() if end.tls else None
        reader, writer = await asyncio.open_connection(end.host, end.port, ssl=context)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(url, reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, bool]:
        """(status, body, whether the connection may be used again)."""
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (
            path.encode(),
            self.host,
            len(body),
        )
        self.writer.write(head + _HEADERS + b"\r\n" + body)
        line = await self.reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer: {line[:40]!r}")
        status = int(parts[1])
        length, chunked, again = -1, False, parts[0] == b"HTTP/1.1"
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"connection":
                again = value != b"close"
        if chunked:
            return status, await self._chunks(), again
        if length > MAX_BODY:
            raise ConnectionError(f"an answer of {length} bytes")
        if length >= 0:
            return status, await self.reader.readexactly(length), again
        return status, await self.reader.read(MAX_BODY), False

    async def _chunks(self) -> bytes:
        out = bytearray()
        while True:
            size_line = (await self.reader.readline()).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise ConnectionError("an answer too large")
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)  # the CRLF after each chunk

    def close(self) -> None:
        self.writer.close()


class Etcd:
    """Async client over ``urls`` (one cluster's endpoints).

    Calls may overlap (the election's keepalive, the ticket and event
    writers): each takes an idle connection to the endpoint or opens one,
    and gives it back once its answer is read whole.
    """

    def __init__(self, urls: Sequence[str], timeout: float = 1.0, writes: bool = False) -> None:
        """``writes``: this client carries a leader's writes (`txn`); grpc is loaded now,
        not on a new leader's first write (it takes a tenth of a second)."""
        self.urls = _Urls(urls)
        self.timeout = timeout
        self._idle: dict[str, list[_AsyncConnection]] = {}
        self._rpc: EtcdRpc | None = None
        if writes:
            self._grpc()

    async def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/PATH`` on the first endpoint that answers."""
        data = msgspec.json.encode(body)
        why = ""
        for url in self.urls.order():
            try:
                status, answer = await asyncio.wait_for(self._post(url, path, data), self.timeout)
            except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as e:
                why = _why(url, e)
                continue
            self.urls.answered(url)
            return _answer(url, status, answer)
        raise EtcdError(why)

    async def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A write transaction, over etcd's gRPC service (`corral.master.etcd_rpc`: cheaper
        for etcd than its gateway); the reply as the gateway spells it."""
        return await self._grpc().txn(compare, success)

    def _grpc(self) -> EtcdRpc:
        if self._rpc is None:
            from corral.master.etcd_rpc import EtcdRpc  # grpc: only masters on etcd load it

            self._rpc = EtcdRpc(self.urls, self.timeout)
        return self._rpc

    async def _post(self, url: str, path: str, data: bytes) -> tuple[int, bytes]:
        idle = self._idle.setdefault(url, [])
        conn = idle.pop() if idle else await _AsyncConnection.open(url)
        again = False
        try:
            status, answer, again = await conn.post(f"/v3/{path}", data)
        finally:  # cancelled (a timeout) or failed: that connection is not used again
            if again:
                idle.append(conn)
            else:
                conn.close()
        return status, answer

    async def status(self) -> None:
        await self.call("maintenance/status", {})

    async def grant(self, ttl: int) -> int:
        reply = await self.call("lease/grant", {"TTL": str(ttl)})
        return int(reply["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL now (0: it has expired)."""
        reply = await self.call("lease/keepalive", {"ID": str(lease)})
        return int(reply.get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("lease/revoke", {"ID": str(lease)})

    async def campaign(self, key: str, value: bytes, lease: int) -> tuple[bool, KeyValue | None]:
        """(won, the holder's key-value); on a win, the key as we just created it."""
        reply = await self.call("kv/txn", campaign_body(key, value, lease))
        if reply.get("succeeded"):
            rev = int(reply["header"]["revision"])
            return True, KeyValue(key, value, rev, rev, lease)
        found = kvs(reply["responses"][0]["response_range"])
        return False, found[0] if found else None

    async def get(self, key: str, prefix: bool = False) -> list[KeyValue]:
        return kvs(await self.call("kv/range", range_body(key, prefix)))

    async def put(self, key: str, value: bytes, lease: int = 0) -> None:
        await self.call("kv/put", put_op(key, value, lease)["requestPut"])

    async def delete(self, key: str) -> None:
        await self.call("kv/deleterange", {"key": b64(key)})


class SyncEtcd:
    """Blocking client over ``urls``, for the ticket store's reads (and its writes off the loop)."""

    def __init__(self, urls: Sequence[str], timeout: float = 1.0) -> None:
        self.urls = _Urls(urls)
        self.timeout = timeout
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = msgspec.json.encode(body)
        why = ""
        for url in self.urls.order():
            try:
                status, answer = self._post(url, path, data)
            except (OSError, http.client.HTTPException, ValueError) as e:
                self._conns.pop(url, None)
                why = _why(url, e)
                continue
            self.urls.answered(url)
            return _answer(url, status, answer)
        raise EtcdError(why)

    def _post(self, url: str, path: str, data: bytes) -> tuple[int, bytes]:
        conn = self._conns.get(url)
        if conn is None:
            end = _endpoint(url)
            if end.tls:
                conn = http.client.HTTPSConnection(end.host, end.port, timeout=self.timeout)
            else:
                conn = http.client.HTTPConnection(end.host, end.port, timeout=self.timeout)
            self._conns[url] = conn
        try:
            conn.request("POST", f"/v3/{path}", data, {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read(MAX_BODY + 1)
        except BaseException:
            conn.close()
            raise
        if len(answer) > MAX_BODY:
            raise ValueError("an answer too large")
        if response.will_close:
            conn.close()
            self._conns.pop(url, None)
        return response.status, answer

    def get(
        self, key: str, prefix: bool = False, limit: int = 0, descend: bool = False
    ) -> list[KeyValue]:
        return kvs(self.call("kv/range", range_body(key, prefix, limit, descend)))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        """Apply ``success`` if every ``compare`` holds; whether it did."""
        reply = self.call("kv/txn", {"compare": compare, "success": success})
        return bool(reply.get("succeeded"))
