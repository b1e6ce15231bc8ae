"""``corral stop``: SIGINT to each named process group (a graceful stop).

Wire: ``POST /v1/signal {"targets": [...], "signal": "SIGINT"}``, see
`master.verbs.signalling`.
"""

from __future__ import annotations

from corral.master.verbs.signalling import DESCRIPTION, SignalVerb


class Stop(SignalVerb):
    name = "stop"
    signal = "SIGINT"
    summary = "stop processes gracefully (SIGINT to each process group)"
    description = DESCRIPTION.format(signal=signal)
    examples = "corral stop n1:4242 n2:977"


VERB = Stop()
