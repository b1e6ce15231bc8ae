"""``corral nodes``: the nodes and their state.

Wire::

    GET /v1/nodes
    -> {"nodes": [{"name", "address", "state", "hostname", "cpus", "mem_total",
                   "mem_used", "cpu_percent", "load1", "last_beat", "procs_running",
                   "procs_total", "ssh_host", "ssh_port", "boot_id", "root",
                   "cpu_history", "version", "worker_pid", "kernel",
                   "mem_offer", "mem_held", "cert_expires"}]}

``state`` is alive, suspect, lost or left; ``last_beat`` is Unix time.
``mem_offer`` is the memory the node offers to jobs (``worker --mem``),
``mem_held`` what placed, unfinished replicas hold of it; neither is the
memory in use, ``mem_used``.  ``cert_expires``: when the node's newest
certificate expires (Unix time), null if it has none on record (revoked).
"""

from __future__ import annotations

import time

from corral.master.text import duration, human_bytes, render
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    from typing import Any

HEADERS = (
    "NODE",
    "STATE",
    "HOST",
    "ADDRESS",
    "CPUS",
    "CPU",
    "MEM",
    "JOBS MEM",
    "LOAD",
    "PROCS",
    "BEAT",
    "CERT",
)


class NodesQuery(Shape):
    """No parameters."""


def _row(n: dict[str, Any], now: float) -> tuple[object, ...]:
    used = human_bytes(n["mem_used"]) if n.get("mem_used") else "-"  # before the first beat
    return (
        n["name"],
        n["state"],
        n.get("hostname", ""),
        n.get("address", ""),
        n.get("cpus", ""),
        f"{float(n.get('cpu_percent', 0.0)):.0f}%",
        f"{used}/{human_bytes(n.get('mem_total'))}",
        f"{human_bytes(n.get('mem_held', 0))}/{human_bytes(n.get('mem_offer'))}",
        f"{float(n.get('load1', 0.0)):.2f}",
        f"{n.get('procs_running', 0)}/{n.get('procs_total', 0)}",
        duration(now - float(n.get("last_beat", now))),
        _cert(n.get("cert_expires"), now),
    )


def _cert(expires: float | None, now: float) -> str:
    """How long the node's certificate has left ("89d"), "expired", or "-" without one."""
    if expires is None:
        return "-"
    left = float(expires) - now
    return duration(left) if left > 0 else "expired"


class Nodes(Verb[NodesQuery]):
    name = "nodes"
    summary = "list the nodes and their state"
    description = (
        "States: alive, suspect (one beat missed), lost (two missed), left.\n"
        "MEM is memory in use of the total; JOBS MEM what jobs' replicas hold of\n"
        "the memory the node offers to jobs (worker --mem). CERT: how long the\n"
        "node's certificate has left (it renews itself with a third to go)."
    )
    examples = "corral nodes\ncorral nodes --json | jq -r '.nodes[].name'"
    path = "/v1/nodes"
    shape = NodesQuery

    async def call(self, plane: Plane, req: NodesQuery) -> Reply:
        import msgspec

        jobs = plane.master.jobs
        nodes = []
        for view in plane.master.cluster.nodes():
            node = msgspec.to_builtins(view)
            node["mem_held"] = jobs.held(view.name)
            node["cert_expires"] = plane.master.cert_expiry(view.name)
            nodes.append(node)
        return {"nodes": nodes}

    def text(self, args: Args, reply: Reply) -> Output:
        now = time.time()
        rows = [_row(n, now) for n in reply.get("nodes", [])]
        if not rows:
            return Output(["no nodes have joined yet"])
        return Output([render(HEADERS, rows, right=HEADERS[4:])])


VERB = Nodes()
