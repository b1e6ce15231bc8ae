"""The control API: HTTP + JSON, bearer token, for `corral` verbs and scripts.

Every request needs ``Authorization: Bearer <token>`` (the token in the
master's state dir).  Errors answer with a 4xx/5xx status and
``{"error": "<one line>"}``.

    GET  /v1/nodes                       -> {"nodes": [NodeView]}
    GET  /v1/ps?node=N&all=1             -> {"procs": [ProcView + "key"]}  (all: ended too)
    POST /v1/launch {argv, nodes, all, app}
                                         -> {"procs": [...], "errors": {node: msg}}
    POST /v1/signal {targets, signal}    -> {"results": [{target, delivered, message}]}
    GET  /v1/logs?target=N:P&tail=10&offset=K&follow=1
                                         -> NDJSON lines {"offset", "data" (base64), "eof"}
    GET  /v1/usage?node=N                -> {"nodes": [NodeUsage]}
    POST /v1/rm {app, nodes, all, force, logs}
                                         -> {"results": [{node, removed, stopped, error}]}
    POST /v1/deploy {file, app, nodes, all, libs, dry_run, trust_host_key}
                                         -> {"results": [NodeDeploy], "plan": text, ...}
         ``file`` and ``libs`` are paths on the master's machine; NodeDeploy is
         {node, to_send, unchanged, sent, bytes, seconds, error}
    GET  /v1/events?limit=N              -> {"events": [Event]}
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from master.control import VerbError
from master.httpd import HttpServer, Request, Response, Stream, json_response

if TYPE_CHECKING:
    from master.control import Master

Route = Callable[[Request], Awaitable[Response | Stream]]

_json = msgspec.json.Encoder()
_TRUE = ("1", "true", "yes")


def _reply(body: Any, status: int = 200) -> Response:
    return json_response(body, status)


def _error(message: str, status: int = 400) -> Response:
    return _reply({"error": message}, status)


def _proc_json(p: Any) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(p)
    d["key"] = p.key
    return d


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
        self._http = HttpServer(self.handle)

    async def start(self, host: str, port: int) -> str:
        bound_host, bound_port = await self._http.start(host, port)
        return f"{bound_host}:{bound_port}"

    async def stop(self) -> None:
        await self._http.stop()

    async def handle(self, request: Request) -> Response | Stream:
        """Check the token, find the route, turn refusals into JSON errors."""
        given = request.headers.get("authorization", "")
        want = f"Bearer {self.master.token}"
        if not hmac.compare_digest(given.encode(), want.encode()):
            return _error("auth refused: bad or missing token", 401)
        route = self.routes.get((request.method, request.path))
        if route is None:
            if request.path in self._paths:
                return _error(f"method {request.method} not allowed on {request.path}", 405)
            return _error(f"no such endpoint: {request.path}", 404)
        try:
            return await route(request)
        except VerbError as e:
            return _error(str(e), 404 if str(e).startswith(("unknown", "no such")) else 400)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return _error(f"bad request body: {e}")
        except ValueError as e:
            return _error(f"bad request: {e}")

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        return msgspec.json.decode(request.body, type=dict[str, Any])

    # --- routes ----------------------------------------------------------------
    async def nodes(self, request: Request) -> Response:
        return _reply({"nodes": self.master.cluster.nodes()})

    async def ps(self, request: Request) -> Response:
        node = request.query.get("node") or None
        if node and not self.master.cluster.has_node(node):
            raise VerbError(f"unknown node: {node}")
        ended = request.query.get("all") in _TRUE
        procs = self.master.cluster.procs(node, include_ended=ended)
        return _reply({"procs": [_proc_json(p) for p in procs]})

    async def launch(self, request: Request) -> Response:
        b = self._body(request)
        res = await self.master.launch(
            list(b.get("argv") or []),
            nodes=list(b.get("nodes") or []),
            all_nodes=bool(b.get("all")),
            app=b.get("app") or None,
        )
        return _reply({"procs": [_proc_json(p) for p in res.procs], "errors": res.errors})

    async def signal(self, request: Request) -> Response:
        b = self._body(request)
        results = await self.master.signal(list(b.get("targets") or []), str(b.get("signal", "")))
        return _reply({"results": results})

    async def logs(self, request: Request) -> Response | Stream:
        q = request.query
        target = q.get("target", "")
        tail = int(q.get("tail", "10"))
        offset = int(q["offset"]) if q.get("offset") else None
        if q.get("follow") not in _TRUE:
            piece = await self.master.logs(target, tail, offset)
            return _reply(_piece(piece))
        pieces = self.master.follow(target, tail, offset)
        first = await anext(pieces)  # errors (unknown process) still answer with a status
        return Stream(_ndjson(first, pieces))

    async def usage(self, request: Request) -> Response:
        node = request.query.get("node") or None
        return _reply({"nodes": await self.master.usage(node)})

    async def rm(self, request: Request) -> Response:
        b = self._body(request)
        results = await self.master.remove(
            str(b.get("app", "")),
            nodes=list(b.get("nodes") or []),
            all_nodes=bool(b.get("all")),
            force=bool(b.get("force")),
            logs=bool(b.get("logs")),
        )
        return _reply({"results": results})

    async def deploy(self, request: Request) -> Response:
        b = self._body(request)
        res = await self.master.deploy(
            str(b.get("file") or ""),
            app=b.get("app") or None,
            nodes=list(b.get("nodes") or []),
            all_nodes=bool(b.get("all")),
            libs=[str(p) for p in b.get("libs") or []],
            dry_run=bool(b.get("dry_run")),
            trust_host_key=bool(b.get("trust_host_key")),
        )
        return _reply(res)

    async def events(self, request: Request) -> Response:
        limit = int(request.query.get("limit", "100"))
        return _reply({"events": self.master.events.read(limit)})


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
