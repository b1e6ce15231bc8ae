"""A supervised process's states, the edges between them, and the one way to move.

The states are the wire's (`transport.messages.ProcState`, DESIGN.md
"Process states and reasons").  The alive ones are the kernel's, sampled:
``refresh`` reads ``/proc/PID/stat``, so whatever happened between two
samples is not seen, and any live state may follow any other, except out
of ``zombie``: a pid with the same start time never lives again.  The
ended ones are final for as long as this daemon runs; a daemon started
later makes a new process object from the records on disk (see
`daemon.records`), and that one starts over.

Every process is born ``running`` (`BORN`): a launched one is on its way
to the exec; an adopted one was launched and is moved on at once by what
the new daemon finds (an exit record, an ``unknown`` mark, the kernel's
word).  The exec itself is no state: from the launch reply on, the pid is
the program's (the seed's, which becomes it), signals reach it and the
kernel's state is its state.  Whether it has execed yet is the report
pipe the supervisor holds until then (`supervisor.Proc.report`).

Stdlib only, like Supervisor's ``supervisor/states.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.transport.messages import ProcInfo, ProcState

BORN: ProcState = "running"

# (from, to): why the process takes that edge.  Nothing else is allowed: an
# ended process stays put no more than it moves (its end is told once).
EDGES: dict[tuple[ProcState, ProcState], str] = {
    # The kernel's word at a refresh (state letters: see procfs._STATES).
    ("running", "running"): "read again, as it was",
    ("sleeping", "sleeping"): "read again, as it was",
    ("stopped", "stopped"): "read again, as it was",
    ("zombie", "zombie"): "read again: its shim has still not reaped it",
    ("running", "sleeping"): "it waits: a timer, I/O, a child (S, D, I)",
    ("running", "stopped"): "SIGSTOP, SIGTSTP, or a tracer stopped it (T, t)",
    ("running", "zombie"): "it ended; its shim has not reaped it yet (Z)",
    ("sleeping", "running"): "woken, on a CPU or waiting for one (R)",
    ("sleeping", "stopped"): "stopped while it waited",
    ("sleeping", "zombie"): "ended while it waited (a signal), not reaped yet",
    ("stopped", "running"): "SIGCONT, and it runs",
    ("stopped", "sleeping"): "SIGCONT, and it waits again",
    ("stopped", "zombie"): "SIGKILL ends a stopped process too",
    # The shim's exit record (its wait4), read when the shim ends or at adoption.
    ("running", "exited"): "it called exit (or the exec failed: 126, 127)",
    ("sleeping", "exited"): "it exited between two samples",
    ("stopped", "exited"): "continued and exited between two samples",
    ("zombie", "exited"): "reaped by its shim, which recorded the status",
    ("running", "killed"): "a signal ended it",
    ("sleeping", "killed"): "a signal ended it while it waited",
    ("stopped", "killed"): "SIGKILL (or SIGCONT, then a signal) while stopped",
    ("zombie", "killed"): "reaped by its shim: a signal had ended it",
    # No record of the end: its shim died unrecorded, or it ran on another boot.
    ("running", "unknown"): "ended, and nobody could record how",
    ("sleeping", "unknown"): "ended, and nobody could record how",
    ("stopped", "unknown"): "ended, and nobody could record how",
    ("zombie", "unknown"): "reaped by someone else than its shim (the shim was killed)",
}

# Tests set it (the worker reads it from the environment): an illegal edge raises.
STRICT = os.environ.get("CORRAL_STRICT_STATES") == "1"
_reported: set[tuple[str, str]] = set()  # illegal edges logged already


class IllegalTransition(RuntimeError):
    """A state change no edge allows: a bug, or a race the table does not know."""


def allowed(before: ProcState, after: ProcState) -> bool:
    """Whether a process may go from ``before`` to ``after``."""
    return (before, after) in EDGES


def transition(info: ProcInfo, to: ProcState, log: Callable[[str], None]) -> bool:
    """Move ``info`` to state ``to``: the one place a supervised process's state changes.

    True if the edge is allowed (staying put, for a live process, is one).
    An illegal edge leaves the state as it was and returns False, after one
    log line per kind of edge (a peer or a race must never bring the
    daemon down); with `STRICT` it raises `IllegalTransition`.
    """
    before = info.state
    if (before, to) in EDGES:
        info.state = to
        return True
    why = f"illegal process state change {before} -> {to} ({info.launch}, pid {info.pid})"
    if STRICT:
        log(why)
        raise IllegalTransition(why)
    if (before, to) not in _reported:
        _reported.add((before, to))
        log(f"{why}; left {before}, further {before} -> {to} not logged")
    return False
