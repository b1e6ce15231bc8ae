"""The control API: HTTP + JSON, bearer token, for `corral` verbs and scripts.

Every request needs ``Authorization: Bearer <token>`` (the token in the
master's state dir); it is checked from the headers before any body byte is
read, and a request without it gets 401 and a closed connection.  Errors
answer with a 4xx/5xx status and ``{"error": "<one line>"}``: 404 for an
unknown node or process, 400 for anything else wrong in the request.

The routes are the verbs of `master.verbs`, each with its wire format in
its module's docstring::

    GET  /v1/nodes      nodes        GET  /v1/logs     logs
    GET  /v1/ps         ps           GET  /v1/usage    usage
    POST /v1/launch     launch       POST /v1/deploy   deploy
    POST /v1/signal     stop, kill   POST /v1/rm       rm
    POST /v1/jobs       submit       GET  /v1/jobs     jobs
    GET  /v1/jobs/ID    job          DELETE /v1/jobs/ID  cancel
    POST /v1/jobs/ID/fetch  fetch (an NDJSON stream of progress, then the result)

The API listens on loopback by default and speaks plain HTTP there.  On
any other address it serves TLS with the master's serving certificate, from
the cluster CA (clients trust ``STATE_DIR/tls/ca.crt``), and it refuses to
start if it cannot.

plus the event log, which no verb prints::

    GET  /v1/events?limit=N  -> {"events": [Event]}  (the last N, at most 10,000)

Bodies and queries are decoded into the verb's request shape: a missing
required field, an unknown field or a wrong type is a 400 naming the field,
e.g. ``bad request body: Expected `bool`, got `str` - at `$.all```.

The server is started by the front end that wants it (`start_api`), not by
the `Master`: the headless master and the dashboard do.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import msgspec

from corral.master import verbs
from corral.master.control import Master, StartError, VerbError, why
from corral.master.deployer import Deployer
from corral.master.httpd import HttpServer, Request, Response, Stream, json_response
from corral.master.state import write_atomic
from corral.master.verbs import wire
from corral.master.verbs.base import Limits, Plane, Shape, Verb
from corral.master.verbs.wire import BadInput
from corral.transport.addresses import is_loopback, split_hostport

Route = Callable[[Request], Awaitable[Response | Stream]]

log = logging.getLogger("corral.master")

_json = msgspec.json.Encoder()

MAX_EVENTS = 10_000  # /v1/events?limit= is capped here
FORWARD_TIMEOUT = 120.0  # a standby waits this long for the leader's answer (deploys are long)
LOCAL = ("/v1/masters", "/v1/events")  # what a standby answers itself; the rest goes to the leader


class EventsQuery(Shape):
    limit: Annotated[int, Limits(ge=0)] = 100


def _error(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


class ApiServer:
    """The routes, bound to one `Master` and its `Deployer`, served by `master.httpd`."""

    def __init__(self, master: Master, deployer: Deployer) -> None:
        self.master = master
        self.plane = Plane(master, deployer)
        self.address = ""
        self.scheme = "http"
        self.routes: dict[tuple[str, str], Route] = {}
        # Paths with parts (/v1/jobs/{id}): matched in turn, after the plain ones.
        self.patterns: list[tuple[str, re.Pattern[str], Route]] = []
        for verb in verbs.every():
            if "{" in verb.path:
                self.patterns.append((verb.method, path_pattern(verb.path), self._route(verb)))
                continue
            # stop and kill share POST /v1/signal (its body names the signal)
            self.routes.setdefault((verb.method, verb.path), self._route(verb))
        self.routes["GET", "/v1/events"] = self.events
        self._paths = {path for _, path in self.routes}
        self.http = HttpServer(self.handle, gate=self.refusal)
        self._client: Any = None  # httpx.AsyncClient for a standby's forwarding, made once needed

    async def start(self, host: str, port: int) -> str:
        ctx = None
        if not is_loopback(host):
            if self.master.ca is None:
                raise StartError(f"refusing to serve the API on {host} without TLS: no CA")
            try:
                ctx = self.master.ca.api_context()
            except (OSError, ValueError) as e:
                raise StartError(f"refusing to serve the API on {host} without TLS: {e}") from None
        bound_host, bound_port = await self.http.start(host, port, ctx)
        self.address = f"{bound_host}:{bound_port}"
        self.scheme = "http" if ctx is None else "https"
        return self.address

    async def stop(self) -> None:
        await self.http.stop()
        if self._client is not None:
            await self._client.aclose()

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
        standby = self.master.election is not None and not self.master.acting
        if standby and request.path not in LOCAL:
            reply = await self.forward(request)
            if reply is not None:
                return reply
            if request.method != "GET":  # nobody to pass it to: refused, reads served here
                return _error(self.master.standby_reason(), 503)
        route = self.routes.get((request.method, request.path))
        if route is None:
            route, known = self._match(request)
            if route is None:
                if known or request.path in self._paths:
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

    async def forward(self, request: Request) -> Response | None:
        """A standby passes a request to the leader's API and its answer back.

        The leader's API is on loopback in plain HTTP, or TLS with the
        cluster CA (the masters share it); the token is the cluster's.
        None when no other master leads (etcd unreachable, or no leader yet).
        """
        why = self.master.standby_reason()
        e = self.master.election
        leader = e.leader if e is not None else None
        if leader is None or e is None or leader.name == e.me.name or not e.reachable:
            return None
        if self._client is None:
            import httpx

            ca = self.master.ca.cert_path if self.master.ca is not None else None
            self._client = httpx.AsyncClient(
                timeout=FORWARD_TIMEOUT, verify=str(ca) if ca else True
            )
        scheme = "http" if is_loopback(split_hostport(leader.api, 7071)[0]) else "https"
        headers = {
            k: v for k, v in request.headers.items() if k in ("authorization", "content-type")
        }
        try:
            reply = await self._client.request(
                request.method,
                f"{scheme}://{leader.api}{request.path}",
                params=request.query,
                content=request.body,
                headers=headers,
            )
        except Exception as err:  # the leader went away meanwhile: one line, no trace
            if request.method == "GET":
                return None  # a read: answered here, from what this master knows
            failed = f"{why}; forwarding to it failed: {err or type(err).__name__}"
            return _error(failed + _loopback_hint(scheme, leader.name, leader.listen), 503)
        kind = reply.headers.get("content-type", "application/json")
        return Response(reply.status_code, reply.content, kind)

    def _match(self, request: Request) -> tuple[Route | None, bool]:
        """The pattern route for ``request`` (its path parts put in its query); and whether
        any route has that path, with another method."""
        known = False
        for method, pattern, route in self.patterns:
            m = pattern.fullmatch(request.path)
            if m is None:
                continue
            if method != request.method:
                known = True
                continue
            request.query = {**request.query, **m.groupdict()}
            return route, True
        return None, known

    def _route(self, verb: Verb[Any]) -> Route:
        """The handler of ``verb``'s route: decode its shape, call it, encode the reply.

        A GET or DELETE carries its request in the query, anything else in
        the body; parts of the path (``{id}``) join either.
        """
        parts = path_fields(verb.path)

        async def route(request: Request) -> Response | Stream:
            if verb.method in ("GET", "DELETE"):
                req = wire.query(request.query, verb.shape)
            elif parts:
                req = wire.body_with(request.body, verb.shape, {p: request.query[p] for p in parts})
            else:
                req = wire.body(request.body, verb.shape)
            reply = await verb.call(self.plane, req)
            if isinstance(reply, AsyncIterator):
                return Stream(_ndjson(reply))
            return json_response(reply)

        return route

    async def events(self, request: Request) -> Response:
        q: EventsQuery = wire.query(request.query, EventsQuery)
        events = await self.master.recent_events(min(q.limit, MAX_EVENTS))
        return json_response({"events": events})


def _loopback_hint(scheme: str, leader: str, listen: str) -> str:
    """Why a leader's API on loopback cannot be reached from here: it is on another machine."""
    if scheme != "http":
        return ""
    from corral.master.ca import machine_names

    host = split_hostport(listen, 7070)[0] if listen else ""
    if not host or is_loopback(host) or host in machine_names():
        return ""  # the same machine: it is simply not answering
    return (
        f" ({leader}'s API listens on loopback on its own machine: run the masters with "
        "--api on an address they reach each other on, served over TLS)"
    )


def path_fields(path: str) -> list[str]:
    """The ``{name}`` parts of a route's path."""
    return re.findall(r"\{(\w+)\}", path)


def path_pattern(path: str) -> re.Pattern[str]:
    """``/v1/jobs/{id}`` as a pattern whose groups are its parts (no ``/`` in a part)."""
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]{1,4096})", re.escape(path)))


async def _ndjson(pieces: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """One JSON line per item; a failure mid-stream becomes an ``error`` line."""
    try:
        async for piece in pieces:
            yield _json.encode(piece) + b"\n"
    except VerbError as e:
        yield _json.encode({"error": str(e)}) + b"\n"
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()


async def start_api(master: Master, deployer: Deployer, address: str | None = None) -> ApiServer:
    """Serve the control API for ``master`` on ``address`` (default: its config's).

    Publishes the bound address in ``STATE_DIR/api`` for the client verbs.
    `StartError` (an OSError) if it cannot listen.
    """
    server = ApiServer(master, deployer)
    host, port = split_hostport(address or master.config.api, 7071)
    try:
        await server.start(host, port)
    except StartError:
        raise
    except OSError as e:
        raise StartError(f"cannot listen for the API on {host}:{port}: {why(e)}") from None
    write_atomic(master.config.state_dir / "api", server.address + "\n")
    log.info("control API on %s", server.address)
    master.api_address = server.address
    try:
        await master.campaign()  # masters on etcd: where clients reach us is now known
    except StartError:
        await server.stop()
        raise
    return server
