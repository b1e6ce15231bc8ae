"""What ``stop`` and ``kill`` share: a signal to each named process group.

Wire (both verbs; any of `master.names.SIGNALS`, with or without ``SIG``)::

    POST /v1/signal {"targets": ["n1:4242", "n2:977"], "signal": "SIGINT"}
    -> {"results": [{"target": "n1:4242", "delivered": true, "message": ""},
                    {"target": "n2:977", "delivered": false,
                     "message": "no such process: n2:977"}]}

Each target is its own result: one that is malformed, unknown, already
ended or on a lost node fails alone and the others still get the signal.
An unknown signal fails the whole request (400).
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any, ClassVar

from corral.master.verbs.base import (
    Args,
    Limits,
    Output,
    Plane,
    Reply,
    Shape,
    Verb,
    target,
)
from corral.master.verbs.shapes import Names

DESCRIPTION = """\
Prints 'delivered {signal} to NODE:PID' for each; a target that could not be
signalled (unknown, already ended, on a lost node) is one line on stderr and
makes the exit status 1, and every other target still gets the signal."""


class SignalRequest(Shape):
    targets: Names
    signal: Annotated[str, Limits(max_length=32)]


class SignalVerb(Verb[SignalRequest]):
    """A verb that sends one fixed signal, named by the subclass."""

    signal: ClassVar[str]
    json_help = "print the results as JSON"
    method = "POST"
    path = "/v1/signal"
    shape = SignalRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("targets", nargs="+", metavar="NODE:PID", type=target)

    def request(self, args: Args) -> dict[str, Any]:
        return {"targets": list(args.targets), "signal": self.signal}

    async def call(self, plane: Plane, req: SignalRequest) -> Reply:
        return {"results": await plane.master.signal(req.targets, req.signal)}

    def text(self, args: Args, reply: Reply) -> Output:
        out, err = [], []
        for r in reply.get("results", []):
            if r.get("delivered"):
                out.append(f"delivered {self.signal} to {r['target']}")
                continue
            message = r.get("message") or f"{self.signal} not delivered"
            err.append(message if r["target"] in message else f"{r['target']}: {message}")
        return Output(out, err, 1 if err else 0)
