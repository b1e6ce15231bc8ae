"""Requests and replies on the master's side: a verb's `Shape` as a msgspec Struct.

The API decodes a request body (`body`) or query (`query`) into the Struct
made of the verb's shape, and the dashboard converts the request its ``:``
line built (`convert`), so both refuse the same things with the same
message: a missing required field, an unknown one, a wrong type or a value
out of its `Limits` names the field, e.g. ``Expected `bool`, got `str` - at
`$.all```.  Replies go out as builtins (`builtins`), the shape the command
line reads.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin, get_type_hints

import msgspec

from corral.master.model import ProcView
from corral.master.verbs import shapes
from corral.master.verbs.base import Limits, Shape


class BadInput(Exception):
    """A body or query that does not fit its shape; the message names the field."""


_structs: dict[type[Shape], type[msgspec.Struct]] = {}


def struct_of(shape: type[Shape]) -> type[msgspec.Struct]:
    """The frozen Struct with ``shape``'s fields (made once); unknown fields are errors."""
    struct = _structs.get(shape)
    if struct is None:
        struct = _structs[shape] = _struct(shape)
    return struct


def _names() -> dict[str, Any]:
    """What a shape's annotations may name without importing it at run time.

    A verb module the command line loads on every run (launch, stop, kill)
    imports `typing` and `shapes` only for mypy, so its annotations are
    resolved here, where both are loaded anyway.
    """
    public = {k: v for k, v in vars(shapes).items() if not k.startswith("_")}
    return {**public, "Annotated": Annotated, "Any": Any, "ClassVar": ClassVar, "Limits": Limits}


def _struct(shape: type[Shape]) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    hints = get_type_hints(shape, localns=_names(), include_extras=True)
    for name, hint in hints.items():
        typed = _typed(hint)
        has_default = hasattr(shape, name)
        fields.append((name, typed, getattr(shape, name)) if has_default else (name, typed))
    return msgspec.defstruct(
        shape.__name__,
        fields,
        module=shape.__module__,
        frozen=True,
        forbid_unknown_fields=True,
    )


def _typed(hint: Any) -> Any:
    """``hint`` with every `Limits` in it made a ``msgspec.Meta``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        extras = [msgspec.Meta(**x.constraints) if isinstance(x, Limits) else x for x in args[1:]]
        return Annotated.__class_getitem__((_typed(args[0]), *extras))
    if origin in (Union, types.UnionType):
        return Union.__getitem__(tuple(_typed(a) for a in args))
    if origin is not None and args:
        return origin[tuple(_typed(a) for a in args)]
    return hint


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line and not too long (it may quote a client's field name)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def body(raw: bytes, shape: type[Shape]) -> Any:
    """A JSON request body as ``shape``'s Struct; `BadInput` if it is not one."""
    try:
        return msgspec.json.decode(raw, type=struct_of(shape))
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadInput(_one_line(f"bad request body: {e}")) from None


def body_with(raw: bytes, shape: type[Shape], parts: dict[str, str]) -> Any:
    """A JSON body as ``shape``'s Struct, with the path's ``parts`` (``{id}``) as fields.

    A part made of digits is a number.
    """
    try:
        given = msgspec.json.decode(raw or b"{}")
    except msgspec.DecodeError as e:
        raise BadInput(_one_line(f"bad request body: {e}")) from None
    if not isinstance(given, dict):
        raise BadInput("bad request body: expected a JSON object")
    given.update({k: int(v) if v.isdigit() and len(v) < 19 else v for k, v in parts.items()})
    try:
        return msgspec.convert(given, struct_of(shape))
    except msgspec.ValidationError as e:
        raise BadInput(_one_line(f"bad request body: {e}")) from None


def query(params: dict[str, str], shape: type[Shape]) -> Any:
    """Query parameters as ``shape``'s Struct (strings converted); `BadInput` if not one.

    An empty value counts as absent; booleans are ``1``/``0``/``true``/``false``.
    """
    given = {k: v for k, v in params.items() if v != ""}
    try:
        return msgspec.convert(given, struct_of(shape), strict=False)
    except msgspec.ValidationError as e:
        raise BadInput(_one_line(f"bad query: {e}")) from None


def convert(request: dict[str, Any], shape: type[Shape]) -> Any:
    """A request built in this process (the dashboard's) as ``shape``'s Struct."""
    given = {k: v for k, v in request.items() if v is not None}
    try:
        return msgspec.convert(given, struct_of(shape), strict=False)
    except msgspec.ValidationError as e:
        raise BadInput(_one_line(f"bad request: {e}")) from None


def proc_json(p: ProcView) -> dict[str, Any]:
    """A process in its JSON shape: its fields and its ``key`` (``NODE:PID``)."""
    d: dict[str, Any] = msgspec.to_builtins(p)
    d["key"] = p.key
    return d


def builtins(reply: Any) -> Any:
    """``reply`` as the command line reads it (Structs as dicts)."""
    return msgspec.to_builtins(reply)
