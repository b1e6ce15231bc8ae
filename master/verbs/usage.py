"""``corral usage``: CPU time and memory of processes, and each node's children totals.

Wire::

    GET /v1/usage?node=NAME
    -> {"nodes": [{"node", "children_user", "children_sys", "children_max_rss",
                   "procs": [ProcView]}]}

Asks each connected node (or only ``node``) for fresh figures.  Children
totals are ``getrusage(RUSAGE_CHILDREN)``: every child the worker reaped.
"""

from __future__ import annotations

import argparse
from typing import Any

from corral.master.text import cpu_seconds, human_bytes, render
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb
from corral.master.verbs.ps import state_text
from corral.master.verbs.shapes import Text

PROC_HEADERS = ("PROC", "APP", "STATE", "USER", "SYS", "RSS", "MAX RSS", "COMMAND")
NODE_HEADERS = ("NODE", "PROCS", "CHILDREN USER", "CHILDREN SYS", "CHILDREN MAX RSS")


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
        _size(p.get("rss")),
        _size(p.get("max_rss")),
        " ".join(p.get("argv", [])),
    )


def _node_row(n: dict[str, Any]) -> tuple[object, ...]:
    return (
        n["node"],
        len(n.get("procs", [])),
        cpu_seconds(n.get("children_user")),
        cpu_seconds(n.get("children_sys")),
        human_bytes(n.get("children_max_rss")),
    )


class Usage(Verb[UsageQuery]):
    name = "usage"
    summary = "CPU time and memory of processes, and each node's children totals"
    description = (
        "Per process: CPU user and system seconds, current and max RSS. Per node:\n"
        "the totals of every child the worker has reaped (getrusage RUSAGE_CHILDREN)."
    )
    examples = "corral usage\ncorral usage --node n1 --json"
    path = "/v1/usage"
    shape = UsageQuery

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--node", metavar="NAME", help="only this node")

    def request(self, args: Args) -> dict[str, Any]:
        return {"node": args.node}

    async def call(self, plane: Plane, req: UsageQuery) -> Reply:
        return {"nodes": await plane.master.usage(req.node or None)}

    def text(self, args: Args, reply: Reply) -> Output:
        nodes = reply.get("nodes", [])
        if not nodes:
            return Output(["no connected nodes"])
        procs = [p for n in nodes for p in sorted(n.get("procs", []), key=_started)]
        lines = []
        if procs:
            rows = [_proc_row(p) for p in procs]
            lines += [render(PROC_HEADERS, rows, right=PROC_HEADERS[3:7]), ""]
        lines.append(render(NODE_HEADERS, [_node_row(n) for n in nodes], right=NODE_HEADERS[1:]))
        return Output(lines)


VERB = Usage()
