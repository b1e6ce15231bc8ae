"""The control API against hostile and careless clients: a real master, real sockets.

Every request goes over a real HTTP connection to a master on 127.0.0.1
port 0, with one simulated worker, ``n1``, that records every command it is
sent: a request the API refuses must never reach it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bench.simworkers import SimWorker
from corral.master.api import MAX_EVENTS, ApiServer, start_api
from corral.master.control import Master, MasterConfig
from corral.master.deployer import Deployer
from corral.master.httpd import MAX_BODY
from corral.master.model import Event
from corral.transport.messages import Error, Launch

pytestmark = pytest.mark.timeout(30)


class RecordingWorker(SimWorker):
    """A simulated worker that keeps every message the master sends it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.got: list[Any] = []

    async def _answer(self) -> None:
        assert self.conn is not None
        while True:
            msg: Any = await self.conn.recv()
            self.got.append(msg)
            if hasattr(msg, "id"):
                await self.conn.send(Error(id=msg.id, message="simulated worker"))

    def commands(self) -> list[Any]:
        return [m for m in self.got if type(m).__name__ in ("Launch", "Signal", "Remove", "Logs")]


async def wait_until(cond: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Env:
    def __init__(self, master: Master, api: ApiServer, worker: RecordingWorker) -> None:
        self.master, self.api, self.worker = master, api, worker
        host, port = api.address.rsplit(":", 1)
        self.host, self.port = host, int(port)

    async def call(
        self, method: str, path: str, body: bytes | object = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One request on a fresh connection; the status and the decoded JSON reply."""
        data = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        token = self.master.token if token is None else token
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            raw = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        head, _, reply = raw.partition(b"\r\n\r\n")
        assert reply.count(b"\n") == 0, reply  # one line
        return int(head.split()[1]), json.loads(reply)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    master = Master(
        MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path, heartbeat=0.3)
    )
    await master.start()
    api = await start_api(master, Deployer(master))
    host, port = master.listen_address.rsplit(":", 1)
    worker = RecordingWorker(host, int(port), master.token, "n1")
    try:
        await worker.connect()
        worker.start_beating()
        await wait_until(lambda: master.cluster.node_state("n1") == "alive", "n1 alive")
        yield Env(master, api, worker)
    finally:
        await worker.close()
        await api.stop()
        await master.stop()


# --- the token, before the body ------------------------------------------------------


@pytest.mark.parametrize("auth", ["", "Authorization: Bearer nope\r\n"], ids=["none", "wrong"])
async def test_no_token_no_body_read_and_the_connection_closes(env: Env, auth: str) -> None:
    reader, writer = await asyncio.open_connection(env.host, env.port)
    writer.write(
        f"POST /v1/launch HTTP/1.1\r\n{auth}Content-Length: {MAX_BODY}\r\n\r\n".encode()
    )  # and not one byte of the 4 MiB it announces
    raw = await asyncio.wait_for(reader.read(), 5)  # returns at the server's close
    assert raw.startswith(b"HTTP/1.1 401") and b"auth refused" in raw
    await wait_until(lambda: env.api.http.connections == 0, "the connection to be dropped")
    writer.close()
    assert env.worker.commands() == []


async def test_a_good_token_gets_its_launch_through(env: Env) -> None:
    body = {"argv": ["true", "x y"], "nodes": ["n1"], "key": "k-1"}
    status, reply = await env.call("POST", "/v1/launch", body)
    assert (status, reply["errors"]) == (200, {"n1": "simulated worker"})
    launches = [m for m in env.worker.commands() if isinstance(m, Launch)]
    assert [(m.argv, m.app) for m in launches] == [(["true", "x y"], "true")]
    assert launches[0].key == "k-1"


# --- typed bodies: 400 naming the field, nothing reaches a worker --------------------

OK = {"argv": ["true"], "nodes": ["n1"]}
BAD_BODIES = [
    # (route, body, what the one-line error must say)
    ("launch", {**OK, "all": "no"}, "Expected `bool`, got `str` - at `$.all`"),
    ("launch", {"argv": "sleep", "nodes": ["n1"]}, "Expected `array`, got `str` - at `$.argv`"),
    ("launch", {**OK, "argv": ["true", 1]}, "Expected `str`, got `int` - at `$.argv[1]`"),
    ("launch", {"argv": 5, "nodes": ["n1"]}, "at `$.argv`"),
    ("launch", {"argv": None, "nodes": ["n1"]}, "at `$.argv`"),
    ("launch", {"argv": ["true"], "nodes": "n1"}, "at `$.nodes`"),
    ("launch", {"argv": ["true"], "nodes": [1]}, "at `$.nodes[0]`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "app": 7}, "at `$.app`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "key": 5}, "at `$.key`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "key": "a\nb"}, "at `$.key`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "key": "k" * 129}, "at `$.key`"),
    ("launch", {"argv": ["a\u0000b"], "nodes": ["n1"]}, "at `$.argv[0]`"),
    ("launch", {"argv": ["x" * (128 * 1024 + 1)], "nodes": ["n1"]}, "at `$.argv[0]`"),
    ("launch", {"argv": ["true"] * 4097, "nodes": ["n1"]}, "at `$.argv`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "nodez": ["n2"]}, "unknown field `nodez`"),
    ("launch", {"nodes": ["n1"]}, "missing required field `argv`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": ["A=1"]}, "at `$.env`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": {"A=B": "1"}}, "at `key` in `$.env`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": {"1X": "1"}}, "at `key` in `$.env`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": {"": "1"}}, "at `key` in `$.env`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": {"A": "a\u0000b"}}, "at `$.env[...]`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": {"A": 1}}, "at `$.env[...]`"),
    ("launch", {"argv": ["true"], "nodes": ["n1"], "env": {f"V{i}": "" for i in range(257)}},
     "at `$.env`"),
    ("launch", [], "Expected `object`, got `array`"),
    ("launch", b"", "bad request body"),
    ("launch", b"{", "bad request body"),
    ("launch", b"\xff\xfe", "bad request body"),
    ("signal", {"targets": "n1:1", "signal": "SIGINT"}, "at `$.targets`"),
    ("signal", {"targets": [None], "signal": "SIGINT"}, "at `$.targets[0]`"),
    ("signal", {"targets": ["n1:1"], "signal": 9}, "at `$.signal`"),
    ("signal", {"targets": ["n1:1"]}, "missing required field `signal`"),
    ("rm", {"app": 5, "nodes": ["n1"]}, "at `$.app`"),
    ("rm", {"app": "x", "nodes": ["n1"], "force": "yes"}, "at `$.force`"),
    ("rm", {"app": "x", "nodes": {"n1": 1}}, "at `$.nodes`"),
    ("rm", {"app": "x", "all": 1}, "at `$.all`"),
    ("deploy", {"file": 5, "nodes": ["n1"]}, "at `$.file`"),
    ("deploy", {"file": "", "nodes": ["n1"]}, "at `$.file`"),
    ("deploy", {"file": "~nobody-here/x", "nodes": ["n1"]}, "at `$.file`"),
    ("deploy", {"file": "/bin/true", "nodes": ["n1"], "libs": "x"}, "at `$.libs`"),
    ("deploy", {"file": "/bin/true", "nodes": ["n1"], "dry_run": "false"}, "at `$.dry_run`"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "error"), BAD_BODIES)
async def test_wrong_bodies_get_400_naming_the_field(
    env: Env, route: str, body: object, error: str
) -> None:
    status, reply = await env.call("POST", f"/v1/{route}", body)
    assert status == 400, reply
    assert reply["error"].startswith("bad request body: ") and error in reply["error"]
    assert env.worker.commands() == []  # nothing reached the worker


BAD_QUERIES = [
    ("/v1/logs?target=n1:1&tail=abc", "at `$.tail`"),
    ("/v1/logs?target=n1:1&tail=-1", "at `$.tail`"),
    ("/v1/logs?target=n1:1&tail=99999999999999999999999", "at `$.tail`"),
    ("/v1/logs?target=n1:1&offset=x", "at `$.offset`"),
    ("/v1/logs?target=n1:1&follow=maybe", "at `$.follow`"),
    ("/v1/ps?all=maybe", "at `$.all`"),
    ("/v1/events?limit=abc", "at `$.limit`"),
    ("/v1/events?limit=-5", "at `$.limit`"),
    ("/v1/events?limit=%C2%B2", "at `$.limit`"),  # "²", a digit to str.isdigit()
    ("/v1/nodes?bogus=1", "unknown field `bogus`"),
    ("/v1/usage?node=n1&nod=n2", "unknown field `nod`"),
]


@pytest.mark.parametrize(("path", "error"), BAD_QUERIES)
async def test_wrong_query_parameters_get_400_naming_the_parameter(
    env: Env, path: str, error: str
) -> None:
    status, reply = await env.call("GET", path)
    assert status == 400 and reply["error"].startswith("bad query: ") and error in reply["error"]
    assert env.worker.commands() == []


async def test_good_query_parameters_still_work(env: Env) -> None:
    assert (await env.call("GET", "/v1/ps?node=n1&all=1"))[0] == 200
    assert (await env.call("GET", "/v1/ps?all=&node="))[0] == 200  # empty: not given
    status, reply = await env.call("GET", "/v1/logs?target=n1:1&tail=5&follow=0")
    assert (status, reply["error"]) == (404, "no such process: n1:1")


# --- /v1/events: capped ------------------------------------------------------------


async def test_events_limit_is_capped(env: Env) -> None:
    for i in range(MAX_EVENTS + 50):
        env.master.events.append(Event(ts=float(i), kind="test", node="n1", message=f"e{i}"))
    status, reply = await env.call("GET", "/v1/events?limit=100000")
    assert status == 200 and len(reply["events"]) == MAX_EVENTS
    assert reply["events"][-1]["message"] == f"e{MAX_EVENTS + 49}"
    status, reply = await env.call("GET", "/v1/events?limit=3")
    assert [e["message"] for e in reply["events"]] == [f"e{MAX_EVENTS + n}" for n in (47, 48, 49)]


async def test_a_bad_signal_name_is_a_bad_request_not_a_missing_thing(env: Env) -> None:
    status, reply = await env.call("POST", "/v1/signal", {"targets": ["n1:1"], "signal": "SIGFOO"})
    assert (status, reply["error"]) == (400, "unknown signal 'SIGFOO'")


async def test_each_signal_target_fails_alone(env: Env) -> None:
    body = {"targets": ["n9:1", "n1", "n1:77"], "signal": "quit"}  # SIGQUIT, as the worker takes
    status, reply = await env.call("POST", "/v1/signal", body)
    assert status == 200
    assert reply["results"] == [
        {"target": "n9:1", "delivered": False, "message": "unknown node: n9"},
        {"target": "n1", "delivered": False, "message": "bad process name 'n1': expected NODE:PID"},
        {"target": "n1:77", "delivered": False, "message": "no such process: n1:77"},
    ]
    assert env.worker.commands() == []  # nothing unknown reached the worker


async def test_an_error_quoting_a_hostile_field_name_stays_one_short_line(env: Env) -> None:
    status, reply = await env.call("POST", "/v1/launch", {**OK, "x\ny" + "z" * 10_000: 1})
    assert status == 400 and "\n" not in reply["error"] and len(reply["error"]) <= 300
    assert reply["error"].startswith("bad request body: Object contains unknown field `x y")
