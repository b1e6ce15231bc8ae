"""transport.quickjson reads and writes what the json package does, byte for byte."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.transport import quickjson

pytestmark = pytest.mark.timeout(120)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(values)
def test_it_writes_what_json_writes_and_reads_it_back(value: object) -> None:
    text = quickjson.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert same(quickjson.loads(text), value)
    assert same(quickjson.loads(json.dumps(value, indent=2).encode()), value)


@settings(max_examples=600, deadline=None)
@given(st.text(max_size=40) | st.sampled_from(["", " ", "{", "[1,]", "1 2", "\ufeff1", "nul"]))
def test_any_text_is_a_value_or_a_value_error_as_with_json(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            quickjson.loads(text)
    else:
        assert same(quickjson.loads(text), expected)


def test_bad_bytes_and_unwritable_values_are_refused() -> None:
    with pytest.raises(ValueError):
        quickjson.loads(b"\xff\xfe{}")
    with pytest.raises(TypeError, match="not JSON serializable"):
        quickjson.dumps({"x": object()})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"[Cc]ircular"):
        quickjson.dumps(loop)
