"""``corral ps``: processes, running ones or ``--all``.

Wire::

    GET /v1/ps?node=NAME&all=1
    -> {"procs": [{"node", "pid", "key", "launch", "app", "argv", "state", "reason",
                   "started_at", "ended_at", "exit_code", "signal", "core_dumped",
                   "cpu_user", "cpu_sys", "cpu_percent", "rss", "max_rss"}]}

``key`` is ``NODE:PID``; ``all=1`` lists ended processes too.  An unknown
``node`` is a 404.

CPU time is the process's and its descendants' (live ones and those it
has reaped), the same while it runs and at its end; ``cpu_percent`` is the
share of one core it used between its last two samples (0 once ended).
"""

from __future__ import annotations

import time

from corral.master.text import cpu_seconds, duration, human_bytes, render
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from corral.master.verbs.shapes import Text

# transport.messages.ALIVE_STATES, spelled here: the command line imports
# this module to print a reply, and msgspec is no import for it to pay.
ALIVE = ("running", "sleeping", "stopped", "zombie")
HEADERS = ("PROC", "APP", "STATE", "CPU", "CPU%", "RSS", "TIME", "COMMAND")


class PsQuery(Shape):
    node: Text | None = None
    all: bool = False


def state_text(p: dict[str, Any]) -> str:
    """How a process is (or how it ended: 'exited 3', 'killed by SIGINT')."""
    return str(p.get("reason") or p.get("state") or "?")


def cpu_percent(p: dict[str, Any]) -> str:
    """Live share of one core ("12.5"); "-" once the process has ended."""
    if p.get("ended_at") is not None or p.get("state") not in ALIVE:
        return "-"
    return f"{float(p.get('cpu_percent') or 0.0):.1f}"


def _run_time(p: dict[str, Any], now: float) -> float:
    end = p.get("ended_at") or now
    return max(0.0, float(end) - float(p.get("started_at") or end))


def _row(p: dict[str, Any], now: float) -> tuple[object, ...]:
    return (
        f"{p['node']}:{p['pid']}",
        p.get("app", ""),
        state_text(p),
        cpu_seconds(float(p.get("cpu_user", 0)) + float(p.get("cpu_sys", 0))),
        cpu_percent(p),
        human_bytes(p.get("rss")) if p.get("rss") else "-",
        duration(_run_time(p, now)),
        " ".join(p.get("argv", [])),
    )


class Ps(Verb[PsQuery]):
    name = "ps"
    summary = "list processes (running ones, or --all)"
    description = (
        "A process is named NODE:PID. Ended processes show how they ended:\n"
        "'exited 3', 'killed by SIGINT', 'killed by SIGSEGV, core dumped'.\n"
        "CPU is the time of the process and its descendants, CPU% the share of\n"
        "one core it used lately (while it runs)."
    )
    examples = "corral ps\ncorral ps --node n1 --all"
    path = "/v1/ps"
    shape = PsQuery

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--node", metavar="NAME", help="only this node")
        p.add_argument("--all", action="store_true", help="ended processes too")

    def request(self, args: Args) -> dict[str, Any]:
        return {"node": args.node, "all": bool(args.all)}

    async def call(self, plane: Plane, req: PsQuery) -> Reply:
        from corral.master.control import VerbError
        from corral.master.verbs.wire import proc_json

        cluster = plane.master.cluster
        if req.node and not cluster.has_node(req.node):
            raise VerbError(f"unknown node: {req.node}")
        procs = cluster.procs(req.node or None, include_ended=req.all)
        return {"procs": [proc_json(p) for p in procs]}

    def text(self, args: Args, reply: Reply) -> Output:
        procs = sorted(reply.get("procs", []), key=lambda p: (p["node"], p.get("started_at", 0)))
        if not procs:
            where = f" on {args.node}" if args.node else ""
            return Output([f"no {'' if args.all else 'running '}processes{where}"])
        now = time.time()
        rows = [_row(p, now) for p in procs]
        return Output([render(HEADERS, rows, right=("CPU", "CPU%", "RSS", "TIME"))])


VERB = Ps()
