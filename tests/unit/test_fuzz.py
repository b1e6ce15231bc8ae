"""Bounded fuzzing of what strangers can feed us: API request bodies and queries, frames.

Only the decoders' own errors may come out, and no API route answers 500,
whatever the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import tempfile
import typing
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.master import api, verbs
from corral.master.control import Master, MasterConfig
from corral.master.deployer import Deployer
from corral.master.httpd import Request
from corral.master.verbs import wire
from corral.master.verbs.base import Shape
from corral.transport import messages as m
from corral.transport.codec import FrameDecoder, FrameError, decode_body

# Every verb's request shape: bodies (POST) and queries (GET), and the event log's query.
BODIES = list({v.shape: v for v in verbs.every() if v.method == "POST"})
QUERIES = [*{v.shape: v for v in verbs.every() if v.method == "GET"}, api.EventsQuery]
FIELDS = sorted(
    {f for s in BODIES + QUERIES for f in wire.struct_of(s).__struct_fields__} | {"x", "type", "id"}
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def json_values(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """Nested JSON-ish values, with strings chosen to be near-misses now and then."""
    scalars = (
        st.none()
        | st.booleans()
        | ints
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
        | st.sampled_from(["", "/bin/true", "n1", "n1:1", "SIGINT", "1", "true", "-1", "²", "\0"])
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=12,
    )


values = json_values(st.integers())
objects = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6)
bodies = st.one_of(
    st.binary(max_size=200),
    objects.map(lambda o: json.dumps(o).encode()),
    values.map(lambda v: json.dumps(v).encode()),
)
query_texts = st.sampled_from(["", "0", "1", "yes", "true", "-3", "1e3", "5.5", "x", "²", "n1:1"])
queries = st.dictionaries(st.sampled_from(FIELDS), query_texts | st.text(max_size=8), max_size=4)


@FUZZ
@given(kind=st.sampled_from(BODIES), data=bodies)
def test_request_bodies_raise_only_decode_errors(kind: type[Shape], data: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        msgspec.json.decode(data, type=wire.struct_of(kind))
    with contextlib.suppress(wire.BadInput):
        wire.body(data, kind)


@FUZZ
@given(kind=st.sampled_from(QUERIES), given_query=queries)
def test_queries_raise_only_validation_errors(
    kind: type[Shape], given_query: dict[str, str]
) -> None:
    with contextlib.suppress(wire.BadInput):
        wire.query(given_query, kind)


names = st.lists(st.sampled_from(["n1", "ghost", "", "n1:1", "n1:²", "x:" + "9" * 30]), max_size=3)
words = st.text(max_size=8) | st.sampled_from(["true", "web", "SIGINT", "kill", "../x"])
# Bodies of the right shape, so the fuzz also reaches the verbs behind the decoders.
SHAPED = {
    "/v1/launch": st.fixed_dictionaries(
        {"argv": st.lists(words, max_size=3)},
        optional={"nodes": names, "all": st.booleans(), "app": st.none() | words, "key": words},
    ),
    "/v1/signal": st.fixed_dictionaries({"targets": names, "signal": words}),
    "/v1/rm": st.fixed_dictionaries(
        {"app": words},
        optional={"nodes": names, "all": st.booleans(), "force": st.booleans()},
    ),
    "/v1/deploy": st.fixed_dictionaries(
        {"file": words.map(lambda w: "/" + w)},
        optional={
            "nodes": names,
            "all": st.booleans(),
            "app": words,
            "dry_run": st.booleans(),
            "force": st.booleans(),
            "ld_library_path": words,
        },
    ),
}
ROUTES = sorted({(v.method, v.path) for v in verbs.every()} | {("GET", "/v1/events")})


def test_no_route_answers_500_whatever_it_is_sent() -> None:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        master = Master(MasterConfig(state_dir=Path(tmp)))
        master.token = "t"
        server = api.ApiServer(master, Deployer(master))
        auth = {"authorization": "Bearer t"}

        @FUZZ
        @given(route=st.sampled_from(ROUTES), draw=st.data(), q=queries)
        def check(route: tuple[str, str], draw: st.DataObject, q: dict[str, str]) -> None:
            method, path = route
            shaped = SHAPED.get(path)
            if shaped is not None and draw.draw(st.booleans()):
                data = json.dumps(draw.draw(shaped)).encode()
            else:
                data = draw.draw(bodies)
            master.token = "t"  # POST /v1/token/rotate replaces it, as it should
            request = Request(method, path, q if method == "GET" else {}, auth, data)
            reply: Any = loop.run_until_complete(server.handle(request))
            assert reply.status in (200, 400, 404), (route, data, q, reply.body)
            json.loads(reply.body)

        try:
            check()
        finally:
            loop.close()


# --- frames ------------------------------------------------------------------------

TAGS = [t.__struct_config__.tag for t in typing.get_args(m.Message)]
msgpack = msgspec.msgpack.Encoder()
frames_of_values = st.builds(
    lambda tag, o: msgpack.encode({"type": tag, **o}),
    st.sampled_from(TAGS) | st.text(max_size=6),
    st.dictionaries(
        st.sampled_from([*FIELDS, "data", "offset", "pid", "seq"]),
        json_values(st.integers(-(2**63), 2**64 - 1)),  # what msgpack can carry
        max_size=5,
    ),
)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=6))
def test_the_frame_decoder_raises_only_frame_errors_on_random_bytes(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(limit=4096)
    with contextlib.suppress(FrameError):
        for chunk in chunks:
            decoder.feed(chunk)


@FUZZ
@given(body=st.binary(min_size=1, max_size=300) | frames_of_values, split=st.integers(0, 400))
def test_whole_frames_of_garbage_raise_only_frame_errors(body: bytes, split: int) -> None:
    with contextlib.suppress(FrameError):
        decode_body(body)
    data = frame(body)
    decoder = FrameDecoder(limit=4096)
    with contextlib.suppress(FrameError):
        decoder.feed(data[:split])
        decoder.feed(data[split:])
