"""``corral rm``: remove an app's files from nodes (every alive node by default).

Wire::

    POST /v1/rm {"app": "web", "nodes": ["n1"], "all": false, "force": false,
                 "logs": false}
    -> {"results": [{"node": "n1", "removed": ["apps/web/bin", ...],
                     "stopped": [4242], "error": ""}]}

Refused on every node, nothing removed anywhere, while the app has running
processes, unless ``force`` (which stops them first: SIGINT, then SIGKILL).
Logs are kept unless ``logs``.  A node that failed has its ``error``.
"""

from __future__ import annotations

from corral.master.text import abridged
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb, node_choice

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

    from corral.master.verbs.shapes import Names, Text


class RmRequest(Shape):
    app: Text
    nodes: Names = []
    all: bool = False
    force: bool = False
    logs: bool = False


def result_line(r: Mapping[str, Any], app: str) -> str:
    """One node's outcome: ``n1: removed apps/web/bin, apps/web/lib (stopped n1:4242)``."""
    node = r.get("node", "?")
    if r.get("error"):
        return f"{node}: {r['error']}"
    removed = r.get("removed") or []
    stopped = r.get("stopped") or []
    what = f"removed {abridged(removed)}" if removed else f"nothing of {app} to remove"
    if stopped:
        what += f" (stopped {abridged([f'{node}:{pid}' for pid in stopped])})"
    return f"{node}: {what}"


class Rm(Verb[RmRequest]):
    name = "rm"
    summary = "remove an app's files from nodes (every alive node by default)"
    description = (
        "Refused while the app has running processes unless --force (which stops\n"
        "them first). Logs are kept unless --logs."
    )
    examples = "corral rm web --node n1\ncorral rm web --all --force --logs"
    json_help = "print the results as JSON"
    method = "POST"
    path = "/v1/rm"
    shape = RmRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("app", metavar="APP")
        node_choice(p, all_help="every alive node (the default)")
        p.add_argument("--force", action="store_true", help="stop the app's processes first")
        p.add_argument("--logs", action="store_true", help="remove its logs too")

    def request(self, args: Args) -> dict[str, Any]:
        return {
            "app": args.app,
            "nodes": args.node or [],
            "all": bool(args.all),
            "force": bool(args.force),
            "logs": bool(args.logs),
        }

    async def call(self, plane: Plane, req: RmRequest) -> Reply:
        results = await plane.master.remove(
            req.app, nodes=req.nodes, all_nodes=req.all, force=req.force, logs=req.logs
        )
        return {"results": results}

    def text(self, args: Args, reply: Reply) -> Output:
        out, err = [], []
        for r in reply.get("results", []):
            if r.get("error"):
                err.append(f"rm {args.app} on {r.get('node', '?')}: {r['error']}")
            else:
                out.append(result_line(r, args.app))
        return Output(out, err, 1 if err else 0)


VERB = Rm()
