"""JSON for the command line: the standard library's own C codec, without the ``json`` package.

``import json`` costs a ``corral`` command about 12 ms on the 2-core
machines here, nearly all of it the ``re`` package (and ``enum`` and
``functools`` under it), which ``json.decoder`` needs only for its
pure-Python fallback and its whitespace pattern.  The work itself is done
by ``_json``, CPython's accelerator, which loads in 0.5 ms: this module
drives its scanner and encoder directly, with the settings ``json.loads``
and ``json.dumps(obj, separators=(",", ":"))`` give them, so what it reads
and writes is byte for byte what ``json`` would (the tests check both
ways).  Where ``_json`` is missing (another Python), it is ``json`` itself.

Errors are ``ValueError``, as with ``json``: the message says where.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SPACE = " \t\n\r"  # JSON's whitespace, no more (str.strip() would take others)


def _constant(name: str) -> float:
    """NaN, Infinity and -Infinity, as ``json.loads`` accepts them."""
    return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


class _Settings:
    """What ``_json.make_scanner`` reads off a ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)


try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - every CPython has _json
    import json as _json_module

    def loads(text: str | bytes) -> Any:
        """The value ``text`` holds; ``ValueError`` if it is not one JSON value."""
        return _json_module.loads(text)

    def dumps(obj: Any) -> str:
        """``obj`` as compact JSON (ASCII, no spaces)."""
        return _json_module.dumps(obj, separators=(",", ":"))

else:
    _scan = _make_scanner(_Settings())  # type: ignore[arg-type]  # duck-typed, as json does

    def _unencodable(obj: Any) -> Any:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    # markers (a dict: circular references are refused), default, the string
    # quoter, indent, key separator, item separator, sort_keys, skipkeys, allow_nan
    _encode = _make_encoder({}, _unencodable, _quote, None, ":", ",", False, False, True)

    def loads(text: str | bytes) -> Any:
        """The value ``text`` holds; ``ValueError`` if it is not one JSON value."""
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
        start = len(text) - len(text.lstrip(_SPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration as e:
            raise ValueError(f"Expecting value: char {e.value}") from None
        if text[end:].strip(_SPACE):
            raise ValueError(f"Extra data: char {end}")
        return value

    def dumps(obj: Any) -> str:
        """``obj`` as compact JSON (ASCII, no spaces)."""
        return "".join(_encode(obj, 0))
