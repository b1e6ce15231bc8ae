"""The control API: HTTP + JSON, bearer token, for `corral` verbs and scripts.

Every request needs ``Authorization: Bearer <token>`` (the token in the
master's state dir); it is checked from the headers before any body byte is
read, and a request without it gets 401 and a closed connection.  Errors
answer with a 4xx/5xx status and ``{"error": "<one line>"}``.

Bodies are JSON objects decoded into the Structs below: a missing required
field, an unknown field or a wrong type is a 400 naming the field, e.g.
``bad request body: Expected `bool`, got `str` - at `$.all```.  Query
parameters are checked the same way (``bad query: ... - at `$.tail```);
booleans are ``1``/``0``/``true``/``false``, an empty value counts as absent.

    GET  /v1/nodes                       -> {"nodes": [NodeView]}
    GET  /v1/ps?node=N&all=1             -> {"procs": [ProcView + "key"]}  (all: ended too)
    POST /v1/launch {argv, nodes?, all?, app?, key?}          (LaunchRequest)
                                         -> {"procs": [...], "errors": {node: msg}}
         ``key``: the operator's request key; a retry with the same key
         returns the first result and starts nothing new
    POST /v1/signal {targets, signal}    -> {"results": [{target, delivered, message}]}
    GET  /v1/logs?target=N:P&tail=10&offset=K&follow=1
                                         -> NDJSON lines {"offset", "data" (base64), "eof"}
    GET  /v1/usage?node=N                -> {"nodes": [NodeUsage]}
    POST /v1/rm {app, nodes?, all?, force?, logs?}            (RmRequest)
                                         -> {"results": [{node, removed, stopped, error}]}
    POST /v1/deploy {file, app?, nodes?, all?, libs?, dry_run?, trust_host_key?}
                                         -> {"results": [NodeDeploy], "plan": text, ...}
         ``file`` and ``libs`` are absolute paths on the master's machine; NodeDeploy is
         {node, to_send, unchanged, sent, bytes, seconds, error}
    GET  /v1/events?limit=N              -> {"events": [Event]}  (the last N, at most 10,000)
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from corral.master.control import VerbError
from corral.master.httpd import HttpServer, Request, Response, Stream, json_response

if TYPE_CHECKING:
    from corral.master.control import Master

Route = Callable[[Request], Awaitable[Response | Stream]]
S = TypeVar("S", bound=msgspec.Struct)

_json = msgspec.json.Encoder()

MAX_EVENTS = 10_000  # /v1/events?limit= is capped here
MAX_ITEMS = 10_000  # nodes, targets or libraries named in one request
MAX_ARGS = 4096  # argv elements
_NO_NUL = r"^[^\x00]*\Z"  # NUL cannot travel in an argv or a path

Text = Annotated[str, Meta(max_length=4096)]
Arg = Annotated[str, Meta(max_length=128 * 1024, pattern=_NO_NUL)]  # Linux's MAX_ARG_STRLEN
FilePath = Annotated[str, Meta(max_length=4096, pattern=r"^/[^\x00]*\Z")]  # absolute
Names = Annotated[list[Text], Meta(max_length=MAX_ITEMS)]
Key = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*\Z")]


# Request bodies and queries: unknown fields are errors, never silently ignored.
class LaunchRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    argv: Annotated[list[Arg], Meta(max_length=MAX_ARGS)]
    nodes: Names = []
    all: bool = False
    app: Text | None = None
    key: Key | None = None


class SignalRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    targets: Names
    signal: Annotated[str, Meta(max_length=32)]


class RmRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    app: Text
    nodes: Names = []
    all: bool = False
    force: bool = False
    logs: bool = False


class DeployRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    file: FilePath
    app: Text | None = None
    nodes: Names = []
    all: bool = False
    libs: Annotated[list[FilePath], Meta(max_length=MAX_ITEMS)] = []
    dry_run: bool = False
    trust_host_key: bool = False


class NoQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class NodeQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: Text | None = None


class PsQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: Text | None = None
    all: bool = False


class LogsQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    target: Text = ""
    tail: Annotated[int, Meta(ge=0, le=2**31 - 1)] = 10
    offset: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    follow: bool = False


class EventsQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    limit: Annotated[int, Meta(ge=0)] = 100


def _reply(body: Any, status: int = 200) -> Response:
    return json_response(body, status)


def _error(message: str, status: int = 400) -> Response:
    return _reply({"error": message}, status)


def _proc_json(p: Any) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(p)
    d["key"] = p.key
    return d


class BadInput(Exception):
    """A body or query that does not fit its Struct; the message names the field."""


def body(request: Request, kind: type[S]) -> S:
    """``request``'s JSON body as a ``kind``; BadInput if it is not one."""
    try:
        return msgspec.json.decode(request.body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadInput(_one_line(f"bad request body: {e}")) from None


def query(request: Request, kind: type[S]) -> S:
    """``request``'s query parameters as a ``kind`` (strings converted); BadInput if not."""
    given = {k: v for k, v in request.query.items() if v != ""}
    try:
        return msgspec.convert(given, kind, strict=False)
    except msgspec.ValidationError as e:
        raise BadInput(_one_line(f"bad query: {e}")) from None


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line and not too long (it may quote a client's field name)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ApiServer:
    """The routes, bound to one `Master`, served by `master.httpd`."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/v1/nodes"): self.nodes,
            ("GET", "/v1/ps"): self.ps,
            ("POST", "/v1/launch"): self.launch,
            ("POST", "/v1/signal"): self.signal,
            ("GET", "/v1/logs"): self.logs,
            ("GET", "/v1/usage"): self.usage,
            ("POST", "/v1/rm"): self.rm,
            ("POST", "/v1/deploy"): self.deploy,
            ("GET", "/v1/events"): self.events,
        }
        self._paths = {path for _, path in self.routes}
        self.http = HttpServer(self.handle, gate=self.refusal)

    async def start(self, host: str, port: int) -> str:
        bound_host, bound_port = await self.http.start(host, port)
        return f"{bound_host}:{bound_port}"

    async def stop(self) -> None:
        await self.http.stop()

    def refusal(self, request: Request) -> Response | None:
        """401 unless the headers carry the token; None lets the request in."""
        given = request.headers.get("authorization", "")
        want = f"Bearer {self.master.token}"
        if hmac.compare_digest(given.encode(), want.encode()):
            return None
        return _error("auth refused: bad or missing token", 401)

    async def handle(self, request: Request) -> Response | Stream:
        """Check the token, find the route, turn refusals into JSON errors."""
        refused = self.refusal(request)
        if refused is not None:
            return refused
        route = self.routes.get((request.method, request.path))
        if route is None:
            if request.path in self._paths:
                return _error(f"method {request.method} not allowed on {request.path}", 405)
            return _error(f"no such endpoint: {request.path}", 404)
        try:
            return await route(request)
        except BadInput as e:
            return _error(str(e))
        except VerbError as e:
            missing = str(e).startswith(("unknown node", "no such"))  # not "unknown signal"
            return _error(str(e), 404 if missing else 400)
        except ValueError as e:
            return _error(f"bad request: {e}")

    # --- routes ----------------------------------------------------------------
    async def nodes(self, request: Request) -> Response:
        query(request, NoQuery)
        return _reply({"nodes": self.master.cluster.nodes()})

    async def ps(self, request: Request) -> Response:
        q = query(request, PsQuery)
        if q.node and not self.master.cluster.has_node(q.node):
            raise VerbError(f"unknown node: {q.node}")
        procs = self.master.cluster.procs(q.node or None, include_ended=q.all)
        return _reply({"procs": [_proc_json(p) for p in procs]})

    async def launch(self, request: Request) -> Response:
        b = body(request, LaunchRequest)
        res = await self.master.launch(
            b.argv, nodes=b.nodes, all_nodes=b.all, app=b.app or None, key=b.key
        )
        return _reply({"procs": [_proc_json(p) for p in res.procs], "errors": res.errors})

    async def signal(self, request: Request) -> Response:
        b = body(request, SignalRequest)
        return _reply({"results": await self.master.signal(b.targets, b.signal)})

    async def logs(self, request: Request) -> Response | Stream:
        q = query(request, LogsQuery)
        if not q.follow:
            piece = await self.master.logs(q.target, q.tail, q.offset)
            return _reply(_piece(piece))
        pieces = self.master.follow(q.target, q.tail, q.offset)
        first = await anext(pieces)  # errors (unknown process) still answer with a status
        return Stream(_ndjson(first, pieces))

    async def usage(self, request: Request) -> Response:
        q = query(request, NodeQuery)
        return _reply({"nodes": await self.master.usage(q.node or None)})

    async def rm(self, request: Request) -> Response:
        b = body(request, RmRequest)
        results = await self.master.remove(
            b.app, nodes=b.nodes, all_nodes=b.all, force=b.force, logs=b.logs
        )
        return _reply({"results": results})

    async def deploy(self, request: Request) -> Response:
        b = body(request, DeployRequest)
        res = await self.master.deploy(
            b.file,
            app=b.app or None,
            nodes=b.nodes,
            all_nodes=b.all,
            libs=b.libs,
            dry_run=b.dry_run,
            trust_host_key=b.trust_host_key,
        )
        return _reply(res)

    async def events(self, request: Request) -> Response:
        q = query(request, EventsQuery)
        return _reply({"events": self.master.events.read(min(q.limit, MAX_EVENTS))})


def _piece(piece: Any) -> dict[str, Any]:
    return {"offset": piece.offset, "data": base64.b64encode(piece.data).decode(), "eof": piece.eof}


async def _ndjson(first: Any, pieces: AsyncGenerator[Any, None]) -> AsyncIterator[bytes]:
    """One JSON line per log piece; a failure mid-stream becomes an ``error`` line."""
    try:
        yield _json.encode(_piece(first)) + b"\n"
        async for piece in pieces:
            yield _json.encode(_piece(piece)) + b"\n"
    except VerbError as e:
        yield _json.encode({"error": str(e)}) + b"\n"
    finally:
        await pieces.aclose()
