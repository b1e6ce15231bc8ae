"""``corral stop``: SIGINT to each named process group (a graceful stop).

Wire: ``POST /v1/signal {"targets": [...], "signal": "SIGINT"}``, see
`master.verbs.signalling`.
"""

from __future__ import annotations

from corral.master.verbs.signalling import DESCRIPTION, WAIT_TIMEOUT, SignalVerb


class Stop(SignalVerb):
    name = "stop"
    signal = "SIGINT"
    summary = "stop processes gracefully (SIGINT to each process group)"
    description = DESCRIPTION.format(signal=signal, timeout=WAIT_TIMEOUT)
    examples = "corral stop n1:4242 n2:977\ncorral stop --wait --timeout 10 n1:4242"


VERB = Stop()
