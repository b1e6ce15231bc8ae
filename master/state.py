"""The master's state directory: where it is, and files published in it.

Standard library only: the command line finds the master's token and API
address here without loading the master.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time

if TYPE_CHECKING:  # pathlib costs the command line milliseconds it does not need
    from pathlib import Path


def default_state_path() -> str:
    """``$XDG_STATE_HOME/corral``, or ``~/.local/state/corral``, as a string."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "corral")


def default_state_dir() -> Path:
    """`default_state_path` as a Path."""
    from pathlib import Path

    return Path(default_state_path())


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a reader sees the old file or the new one.

    Clients poll the address files (``listen``, ``api``) while a master
    starts, so a half-written one must never be seen.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
