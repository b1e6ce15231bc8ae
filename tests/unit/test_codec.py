"""Codec: every message round-trips; malformed input raises FrameError, never anything else."""

from __future__ import annotations

import contextlib
import struct
import types
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.transport import messages as m
from corral.transport.codec import FrameDecoder, FrameError, body_length, decode_body, encode

MESSAGE_TYPES = typing.get_args(m.Message)


_INT = st.integers(-(2**63), 2**63 - 1)
_FLOAT = st.floats(allow_nan=False)


def _strategy_for(tp: typing.Any) -> st.SearchStrategy[typing.Any]:
    """Values of ``tp`` as they can travel: 64-bit ints, floats without NaN."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        hints = typing.get_type_hints(tp)
        fields = {f: _strategy_for(hints[f]) for f in tp.__struct_fields__}
        return st.builds(tp, **fields)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy_for(a) for a in args))
    if origin is list:
        return st.lists(_strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(_strategy_for(args[0]), _strategy_for(args[1]), max_size=3)
    simple = {
        int: _INT,
        float: _FLOAT,
        str: st.text(max_size=12),
        bytes: st.binary(max_size=40),
        bool: st.booleans(),
        type(None): st.none(),
    }
    return simple[tp]


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(_strategy_for(cls))
    frame = encode(msg)
    assert body_length(frame[:4]) == len(frame) - 4
    assert decode_body(frame[4:]) == msg


def test_every_message_type_is_covered() -> None:
    assert len(MESSAGE_TYPES) == len(set(MESSAGE_TYPES)) >= 30


def test_decoder_reassembles_split_frames() -> None:
    msgs = [m.Status(id=i) for i in range(5)] + [m.LogChunk(id=9, offset=0, data=b"x" * 1000)]
    stream = b"".join(encode(x) for x in msgs)
    dec = FrameDecoder()
    out = []
    for i in range(0, len(stream), 7):
        out += dec.feed(stream[i : i + 7])
    assert out == msgs
    assert dec.pending == 0


def test_huge_length_refused_before_body() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameError, match="exceeds"):
        dec.feed(struct.pack(">I", 2**31))  # header only: no body byte was needed


def test_zero_length_refused() -> None:
    with pytest.raises(FrameError, match="empty"):
        body_length(struct.pack(">I", 0))


def test_truncated_header() -> None:
    with pytest.raises(FrameError, match="truncated"):
        body_length(b"\x00\x00")


@pytest.mark.parametrize(
    "body",
    [
        msgspec.msgpack.encode({"type": "NoSuchThing", "id": 1}),  # unknown tag
        msgspec.msgpack.encode({"type": "Launch", "id": "one", "app": "a", "argv": []}),  # type
        msgspec.msgpack.encode({"type": "Launch", "app": "a"}),  # missing fields
        msgspec.msgpack.encode([1, 2, 3]),  # not a map
        b"\xc1",  # never-used msgpack byte
        b"\x92\x01",  # array missing its second element
    ],
    ids=["unknown-tag", "wrong-type", "missing-field", "not-a-map", "invalid", "truncated-body"],
)
def test_malformed_bodies_raise_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode_body(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(blob: bytes) -> None:
    dec = FrameDecoder(limit=1024)
    with contextlib.suppress(FrameError):
        dec.feed(blob)


def test_oversized_message_refused_on_encode() -> None:
    with pytest.raises(FrameError):
        encode(m.LogChunk(id=1, offset=0, data=b"\0" * (m.MAX_FRAME + 1)))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("web", True),
        ("a.b_c-1", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("../x", False),
        ("a/b", False),
        ("..", False),
        (".", False),
        ("a b", False),
    ],
)
def test_app_names(name: str, ok: bool) -> None:
    assert m.valid_app_name(name) is ok
