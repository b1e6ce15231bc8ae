"""``corral usage``: CPU time and memory of processes, and each node's children totals.

Wire::

    GET /v1/usage?node=NAME
    -> {"nodes": [{"node", "children_user", "children_sys", "children_max_rss",
                   "cpu_percent", "procs": [ProcView]}]}

Asks each connected node (or only ``node``) for fresh figures.  A
process's CPU time is its own and its descendants' (as in ``ps``), its
``cpu_percent`` the share of one core it used lately; a node's
``cpu_percent`` is the sum over its processes.  Children totals are
``getrusage(RUSAGE_CHILDREN)``: every child the worker reaped.
"""

from __future__ import annotations

from corral.master.text import cpu_seconds, human_bytes, render
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb
from corral.master.verbs.ps import cpu_percent, state_text

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from corral.master.verbs.shapes import Text

PROC_HEADERS = ("PROC", "APP", "STATE", "USER", "SYS", "CPU%", "RSS", "MAX RSS", "COMMAND")
NODE_HEADERS = ("NODE", "PROCS", "CPU%", "CHILDREN USER", "CHILDREN SYS", "CHILDREN MAX RSS")


class UsageQuery(Shape):
    node: Text | None = None


def _started(p: dict[str, Any]) -> float:
    return float(p.get("started_at", 0))


def _size(n: Any) -> str:
    return human_bytes(n) if n else "-"


def _proc_row(p: dict[str, Any]) -> tuple[object, ...]:
    return (
        f"{p['node']}:{p['pid']}",
        p.get("app", ""),
        state_text(p),
        cpu_seconds(p.get("cpu_user")),
        cpu_seconds(p.get("cpu_sys")),
        cpu_percent(p),
        _size(p.get("rss")),
        _size(p.get("max_rss")),
        " ".join(p.get("argv", [])),
    )


def _node_row(n: dict[str, Any]) -> tuple[object, ...]:
    return (
        n["node"],
        len(n.get("procs", [])),
        f"{float(n.get('cpu_percent') or 0.0):.1f}",
        cpu_seconds(n.get("children_user")),
        cpu_seconds(n.get("children_sys")),
        human_bytes(n.get("children_max_rss")),
    )


class Usage(Verb[UsageQuery]):
    name = "usage"
    summary = "CPU time and memory of processes, and each node's children totals"
    description = (
        "Per process: CPU user and system seconds (its own and its descendants'),\n"
        "CPU% (of one core, lately), current and max RSS. Per node: its processes'\n"
        "CPU% together, and the totals of every child the worker has reaped\n"
        "(getrusage RUSAGE_CHILDREN)."
    )
    examples = "corral usage\ncorral usage --node n1 --json"
    path = "/v1/usage"
    shape = UsageQuery

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--node", metavar="NAME", help="only this node")

    def request(self, args: Args) -> dict[str, Any]:
        return {"node": args.node}

    async def call(self, plane: Plane, req: UsageQuery) -> Reply:
        from corral.master.verbs.wire import builtins

        nodes = await plane.master.usage(req.node or None)
        # A node's live CPU %: its processes' together (ended ones count 0).
        return {
            "nodes": [
                {**builtins(n), "cpu_percent": sum(p.cpu_percent for p in n.procs if p.alive)}
                for n in nodes
            ]
        }

    def text(self, args: Args, reply: Reply) -> Output:
        nodes = reply.get("nodes", [])
        if not nodes:
            return Output(["no connected nodes"])
        procs = [p for n in nodes for p in sorted(n.get("procs", []), key=_started)]
        lines = []
        if procs:
            rows = [_proc_row(p) for p in procs]
            lines += [render(PROC_HEADERS, rows, right=PROC_HEADERS[3:8]), ""]
        lines.append(render(NODE_HEADERS, [_node_row(n) for n in nodes], right=NODE_HEADERS[1:]))
        return Output(lines)


VERB = Usage()
