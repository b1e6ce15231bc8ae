"""``corral kill``: SIGKILL to each named process group (a forceful stop).

Wire: ``POST /v1/signal {"targets": [...], "signal": "SIGKILL"}``, see
`master.verbs.signalling`.
"""

from __future__ import annotations

from corral.master.verbs.signalling import DESCRIPTION, SignalVerb


class Kill(SignalVerb):
    name = "kill"
    signal = "SIGKILL"
    summary = "stop processes forcefully (SIGKILL to each process group)"
    description = DESCRIPTION.format(signal=signal)
    examples = "corral kill n1:4242 n2:977"


VERB = Kill()
