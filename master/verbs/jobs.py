"""``corral jobs``: queued and running jobs (``--all``: ended ones too).

Wire::

    GET /v1/jobs?all=1
    -> {"jobs": [ticket, ...]}   oldest first; see ``corral job`` for a ticket

A queued job's ``position`` is its place in the queue (1: next) and its
``reason`` says why it waits: each node's room at the head of the queue
("needs 3 x 2.0G; n1 1.5G free of 4.0G, n2 lost"), "behind job 12" behind it.
"""

from __future__ import annotations

from corral.master.job_report import jobs_table
from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any


class JobsQuery(Shape):
    all: bool = False


class JobsVerb(Verb[JobsQuery]):
    name = "jobs"
    summary = "list queued and running jobs (--all: ended ones too)"
    description = (
        "REPLICAS is running/asked for; MEM what each replica holds on its node.\n"
        "A queued job shows its place in the queue (POS) and why it waits."
    )
    examples = "corral jobs\ncorral jobs --all --json"
    path = "/v1/jobs"
    shape = JobsQuery

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--all", action="store_true", help="ended jobs too (the newest 10,000)")

    def request(self, args: Args) -> dict[str, Any]:
        return {"all": bool(args.all)}

    async def call(self, plane: Plane, req: JobsQuery) -> Reply:
        jobs = plane.master.jobs
        return {"jobs": jobs.tickets(jobs.jobs(ended=req.all))}

    def text(self, args: Args, reply: Reply) -> Output:
        jobs = reply.get("jobs") or []
        if not jobs:
            return Output(["no jobs" if args.all else "no queued or running jobs"])
        return Output([jobs_table(jobs)])


VERB = JobsVerb()
