"""``corral masters``: the masters on etcd, who leads, and since when.

Wire::

    GET /v1/masters
    -> {"masters": [{"name", "address", "api", "role", "leader_since", "term"}],
        "this": NAME, "acting": BOOL, "etcd": "" | "why etcd cannot be read"}

``role`` is leader or standby; ``leader_since`` (Unix time) and ``term``
(the election key's revision, carried by every command to a worker) are
the leader's, 0 for a standby.  A master run without ``--etcd`` is the one
master: its own row, leader, term 0.  Any master answers, a standby too.
``acting`` is whether the answering master commands now: the leader once
its lease is renewed (for a moment after etcd comes back, etcd may name a
leader that does not act yet, and refuses commands with 503 meanwhile).
"""

from __future__ import annotations

import time
from typing import Any

from corral.master.text import duration, render
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb

HEADERS = ("MASTER", "ROLE", "ADDRESS", "API", "LEADER SINCE", "TERM")


class MastersQuery(Shape):
    """No parameters."""


def _row(m: dict[str, Any], now: float) -> tuple[object, ...]:
    since = float(m.get("leader_since") or 0)
    return (
        m["name"],
        m["role"],
        m.get("address", ""),
        m.get("api", ""),
        f"{duration(now - since)} ago" if since else "-",
        m.get("term") or "-",
    )


class Masters(Verb[MastersQuery]):
    name = "masters"
    summary = "list the masters (on etcd): name, role, leader since, term"
    description = (
        "With `corral master --etcd`, masters campaign for the lead on etcd; the\n"
        "leader alone accepts workers, schedules and commands, and its term travels\n"
        "in every command (workers refuse an older one). Any master answers this."
    )
    examples = "corral masters\ncorral masters --json | jq -r '.masters[].role'"
    path = "/v1/masters"
    shape = MastersQuery

    async def call(self, plane: Plane, req: MastersQuery) -> Reply:
        return await plane.master.masters()

    def text(self, args: Args, reply: Reply) -> Output:
        now = time.time()
        rows = [_row(m, now) for m in reply.get("masters", [])]
        err = [f"etcd: {reply['etcd']}"] if reply.get("etcd") else []
        if not rows:
            return Output(["no masters known"], err, 1 if err else 0)
        return Output([render(HEADERS, rows)], err)


VERB = Masters()
