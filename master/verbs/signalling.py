"""What ``stop`` and ``kill`` share: a signal to each named process group.

Wire (both verbs; any of `master.names.SIGNALS`, with or without ``SIG``)::

    POST /v1/signal {"targets": ["n1:4242", "n2:977"], "signal": "SIGINT"}
    -> {"results": [{"target": "n1:4242", "delivered": true, "message": ""},
                    {"target": "n2:977", "delivered": false,
                     "message": "no such process: n2:977"}]}

Each target is its own result: one that is malformed, unknown, already
ended or on a lost node fails alone and the others still get the signal.
An unknown signal fails the whole request (400).

With ``"wait": true`` (and ``"timeout"``, seconds, default 30, at most
3600) the reply comes once every target the signal reached has ended, or
the timeout has passed; each delivered result then also says whether it
ended, how, and how many seconds after the signal (the master waits on the
workers' process events, it does not poll)::

    POST /v1/signal {"targets": ["n1:4242"], "signal": "SIGINT", "wait": true,
                     "timeout": 10}
    -> {"results": [{"target": "n1:4242", "delivered": true, "message": "",
                     "ended": true, "reason": "killed by SIGINT", "seconds": 0.31}]}

A target still running at the timeout has ``"ended": false`` (``reason``
"", ``seconds`` null).  Without a wait, or for a target the signal did not
reach, a result has only ``target``, ``delivered`` and ``message``.
"""

from __future__ import annotations

from corral.master.verbs.base import (
    Api,
    Args,
    Limits,
    Output,
    Plane,
    Reply,
    Shape,
    Verb,
    invalid,
    target,
)

# For mypy only: the command line loads this module on every run, without typing;
# the API resolves these names in the annotations (`wire._names`).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Annotated, Any, ClassVar

    from corral.master.verbs.shapes import Names

DESCRIPTION = """\
Prints 'delivered {signal} to NODE:PID' for each; a target that could not be
signalled (unknown, already ended, on a lost node) is one line on stderr and
makes the exit status 1, and every other target still gets the signal.

With --wait it waits until each target has ended and prints how, e.g.
'n1:4242 killed by SIGINT after 0.31 s'; a target still running after
--timeout seconds (default {timeout:g}) is a line on stderr and exit status 1."""

WAIT_TIMEOUT = 30.0  # seconds --wait waits by default
MAX_WAIT = 3600.0


class SignalRequest(Shape):
    targets: Names
    signal: Annotated[str, Limits(max_length=32)]
    wait: bool = False
    timeout: Annotated[float, Limits(gt=0, le=MAX_WAIT)] = WAIT_TIMEOUT


def _seconds(text: str) -> float:
    """An argparse type: seconds above 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise invalid(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_WAIT:
        raise invalid(f"expected above 0 and at most {MAX_WAIT:g}: {text!r}")
    return value


class SignalVerb(Verb[SignalRequest]):
    """A verb that sends one fixed signal, named by the subclass."""

    signal: ClassVar[str]
    json_help = "print the results as JSON"
    method = "POST"
    path = "/v1/signal"
    shape = SignalRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("targets", nargs="+", metavar="NODE:PID", type=target)
        p.add_argument("--wait", action="store_true", help="wait until each has ended and say how")
        p.add_argument(
            "--timeout",
            metavar="S",
            type=_seconds,
            help=f"with --wait: give up after S seconds (default {WAIT_TIMEOUT:g}); implies --wait",
        )

    def request(self, args: Args) -> dict[str, Any]:
        req: dict[str, Any] = {"targets": list(args.targets), "signal": self.signal}
        if getattr(args, "wait", False) or getattr(args, "timeout", None) is not None:
            req["wait"] = True
            req["timeout"] = args.timeout or WAIT_TIMEOUT
        return req

    async def call(self, plane: Plane, req: SignalRequest) -> Reply:
        wait = req.timeout if req.wait else None
        return {"results": await plane.master.signal(req.targets, req.signal, wait)}

    def run(self, args: Args, api: Api) -> int:
        req = self.request(args)
        if req.get("wait"):
            api.timeout = max(api.timeout, req["timeout"] + 10.0)  # the master answers first
        return self.show(args, self.send(api, req))

    def text(self, args: Args, reply: Reply) -> Output:
        out, err = [], []
        for r in reply.get("results", []):
            if r.get("delivered") and r.get("ended") is True:
                out.append(f"{r['target']} {r.get('reason') or 'ended'} after {r['seconds']:.2f} s")
                continue
            if r.get("delivered") and r.get("ended") is False:
                timeout = getattr(args, "timeout", None) or WAIT_TIMEOUT
                err.append(f"{r['target']} still running {timeout:g} s after {self.signal}")
                continue
            if r.get("delivered"):
                out.append(f"delivered {self.signal} to {r['target']}")
                continue
            message = r.get("message") or f"{self.signal} not delivered"
            err.append(message if r["target"] in message else f"{r['target']}: {message}")
        return Output(out, err, 1 if err else 0)
