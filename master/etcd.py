"""The one etcd client of corral: etcd's v3 JSON gateway over HTTP (httpx).

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
`SyncEtcd` the blocking one the ticket store uses (loopback round trips
of a millisecond, like SQLite's fsyncs).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

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
            parsed = httpx.URL(url)
        except httpx.InvalidURL as e:
            raise ValueError(f"--etcd: bad URL {url!r}: {e}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"--etcd: bad URL {url!r}: expected http://HOST:PORT")
    return urls


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


def _why(url: str, e: Exception) -> str:
    if isinstance(e, httpx.TimeoutException):
        return f"etcd at {url} did not answer in time"
    if isinstance(e, httpx.ConnectError):
        return f"cannot reach etcd at {url}: {str(e) or 'connection refused'}"
    return f"etcd at {url} failed: {str(e) or type(e).__name__}"


def _answer(url: str, response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise EtcdError(f"{url} is not etcd's v3 gateway (HTTP {response.status_code})") from None
    if not isinstance(data, dict):
        raise EtcdError(f"{url} is not etcd's v3 gateway (HTTP {response.status_code})")
    if response.status_code != 200:
        raise EtcdError(f"etcd at {url} refused: {data.get('error') or data.get('message')}")
    result = data.get("result", data)  # streaming calls (keepalive) wrap their answer
    return result if isinstance(result, dict) else {}


class Etcd:
    """Async client over ``urls`` (one cluster's endpoints)."""

    def __init__(self, urls: Sequence[str], timeout: float = 1.0) -> None:
        self.urls = _Urls(urls)
        self.client = httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/PATH`` on the first endpoint that answers."""
        why = ""
        for url in self.urls.order():
            try:
                response = await self.client.post(f"{url}/v3/{path}", json=body)
            except httpx.HTTPError as e:
                why = _why(url, e)
                continue
            self.urls.answered(url)
            return _answer(url, response)
        raise EtcdError(why)

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
    """Blocking client over ``urls``, for the ticket store's short writes."""

    def __init__(self, urls: Sequence[str], timeout: float = 1.0) -> None:
        self.urls = _Urls(urls)
        self.client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        why = ""
        for url in self.urls.order():
            try:
                response = self.client.post(f"{url}/v3/{path}", json=body)
            except httpx.HTTPError as e:
                why = _why(url, e)
                continue
            self.urls.answered(url)
            return _answer(url, response)
        raise EtcdError(why)

    def get(
        self, key: str, prefix: bool = False, limit: int = 0, descend: bool = False
    ) -> list[KeyValue]:
        return kvs(self.call("kv/range", range_body(key, prefix, limit, descend)))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        """Apply ``success`` if every ``compare`` holds; whether it did."""
        reply = self.call("kv/txn", {"compare": compare, "success": success})
        return bool(reply.get("succeeded"))
