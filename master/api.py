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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from master.control import VerbError

if TYPE_CHECKING:
    from master.control import Master

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_json = msgspec.json.Encoder()


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(body), status=status, content_type="application/json")


def _error(message: str, status: int = 400) -> web.Response:
    return _reply({"error": message}, status)


def _proc_json(p: Any) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(p)
    d["key"] = p.key
    return d


class ApiServer:
    """aiohttp application bound to one `Master`."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.app = web.Application(middlewares=[self._auth, self._errors])
        r = self.app.router
        r.add_get("/v1/nodes", self.nodes)
        r.add_get("/v1/ps", self.ps)
        r.add_post("/v1/launch", self.launch)
        r.add_post("/v1/signal", self.signal)
        r.add_get("/v1/logs", self.logs)
        r.add_get("/v1/usage", self.usage)
        r.add_post("/v1/rm", self.rm)
        r.add_post("/v1/deploy", self.deploy)
        r.add_get("/v1/events", self.events)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sock = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        return f"{sock[0]}:{sock[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- middleware ----------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        want = f"Bearer {self.master.token}"
        if not hmac.compare_digest(given.encode(), want.encode()):
            return _error("auth refused: bad or missing token", 401)
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except VerbError as e:
            return _error(str(e), 404 if str(e).startswith(("unknown", "no such")) else 400)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return _error(f"bad request body: {e}")
        except ValueError as e:
            return _error(f"bad request: {e}")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = msgspec.json.decode(await request.read(), type=dict[str, Any])
        return body

    # --- routes ----------------------------------------------------------------
    async def nodes(self, request: web.Request) -> web.Response:
        return _reply({"nodes": self.master.cluster.nodes()})

    async def ps(self, request: web.Request) -> web.Response:
        node = request.query.get("node") or None
        if node and not self.master.cluster.has_node(node):
            raise VerbError(f"unknown node: {node}")
        ended = request.query.get("all") in ("1", "true", "yes")
        procs = self.master.cluster.procs(node, include_ended=ended)
        return _reply({"procs": [_proc_json(p) for p in procs]})

    async def launch(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        res = await self.master.launch(
            list(b.get("argv") or []),
            nodes=list(b.get("nodes") or []),
            all_nodes=bool(b.get("all")),
            app=b.get("app") or None,
        )
        return _reply({"procs": [_proc_json(p) for p in res.procs], "errors": res.errors})

    async def signal(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        results = await self.master.signal(list(b.get("targets") or []), str(b.get("signal", "")))
        return _reply({"results": results})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        target = q.get("target", "")
        tail = int(q.get("tail", "10"))
        offset = int(q["offset"]) if q.get("offset") else None
        if q.get("follow") not in ("1", "true", "yes"):
            piece = await self.master.logs(target, tail, offset)
            return _reply(_piece(piece))
        pieces = self.master.follow(target, tail, offset)
        first = await anext(pieces)  # errors (unknown process) still answer with a status
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            await resp.write(_json.encode(_piece(first)) + b"\n")
            async for piece in pieces:
                await resp.write(_json.encode(_piece(piece)) + b"\n")
        except VerbError as e:
            await resp.write(_json.encode({"error": str(e)}) + b"\n")
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            await pieces.aclose()
        return resp

    async def usage(self, request: web.Request) -> web.Response:
        node = request.query.get("node") or None
        return _reply({"nodes": await self.master.usage(node)})

    async def rm(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        results = await self.master.remove(
            str(b.get("app", "")),
            nodes=list(b.get("nodes") or []),
            all_nodes=bool(b.get("all")),
            force=bool(b.get("force")),
            logs=bool(b.get("logs")),
        )
        return _reply({"results": results})

    async def deploy(self, request: web.Request) -> web.Response:
        b = await self._body(request)
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

    async def events(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "100"))
        return _reply({"events": self.master.events.read(limit)})


def _piece(piece: Any) -> dict[str, Any]:
    return {"offset": piece.offset, "data": base64.b64encode(piece.data).decode(), "eof": piece.eof}
