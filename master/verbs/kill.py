"""``corral kill``: SIGKILL to each named process group (a forceful stop).

Wire: ``POST /v1/signal {"targets": [...], "signal": "SIGKILL"}``, see
`master.verbs.signalling`.
"""

from __future__ import annotations

from corral.master.verbs.signalling import DESCRIPTION, WAIT_TIMEOUT, SignalVerb


class Kill(SignalVerb):
    name = "kill"
    signal = "SIGKILL"
    summary = "stop processes forcefully (SIGKILL to each process group)"
    description = DESCRIPTION.format(signal=signal, timeout=WAIT_TIMEOUT)
    examples = "corral kill n1:4242 n2:977\ncorral kill --wait n1:4242"


VERB = Kill()
