"""The client verbs, one module each: the registry the CLI, the API and the dashboard read.

A verb module (``master/verbs/launch.py``, ...) holds one `base.Verb`
record, ``VERB``, and its wire format in its docstring.  Records are loaded
on first use, so the command line pays only for the verb it runs.  A new
verb is a new module and its name here.
"""

from __future__ import annotations

import sys

from corral.master.verbs.base import Verb

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    from typing import Any

# In the order `corral --help` lists them.
NAMES = (
    "nodes",
    "ps",
    "launch",
    "stop",
    "kill",
    "logs",
    "usage",
    "deploy",
    "rm",
    "submit",
    "jobs",
    "job",
    "cancel",
    "fetch",
    "node",
    "token",
    "masters",
)

_loaded: dict[str, Verb[Any]] = {}


def get(name: str) -> Verb[Any]:
    """The record of verb ``name``; KeyError if there is no such verb."""
    if name not in NAMES:
        raise KeyError(name)
    verb = _loaded.get(name)
    if verb is None:
        module = f"{__name__}.{name}"
        __import__(module)  # importlib.import_module would load `warnings` for nothing
        verb = sys.modules[module].VERB
        assert isinstance(verb, Verb) and verb.name == name, name
        _loaded[name] = verb
    return verb


def every() -> list[Verb[Any]]:
    """Every verb's record, in `NAMES` order."""
    return [get(name) for name in NAMES]
