"""A module that is imported on first use, for the heavy ones a start-up does not need.

paramiko (150-190 ms to import here) and pyelftools (about 50 ms) serve
deploys, bundles and fetches only; a master imported them at every start
(an empty master's start to its API: 0.63 s with them, 0.45-0.48 s without).  The modules that
use them say, as a module attribute::

    if TYPE_CHECKING:
        import paramiko
    else:
        paramiko = lazy("paramiko")

and every ``paramiko.X`` then imports paramiko the first time it runs
(an ``except (OSError, paramiko.SSHException)`` clause too, but only when
an exception reaches it).  The import is Python's own, under its lock, so
threads that race to it get the one module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name`` until an attribute is asked for, then forwards to it."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r}, {state}>"


def lazy(name: str) -> Any:
    """Module ``name``, imported the first time one of its attributes is used."""
    return LazyModule(name)
