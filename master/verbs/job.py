"""``corral job ID``: a job's ticket.

Wire::

    GET /v1/jobs/ID
    -> {"id", "name", "app", "argv", "count", "mem", "spread", "outputs",
        "state", "reason", "position", "running", "cancelled",
        "submitted_at", "started_at", "ended_at",
        "replicas": [{"index", "state", "node", "pid", "target", "launch", "key",
                      "reason", "started_at", "ended_at", "exit_code",
                      "cpu_user", "cpu_sys", "max_rss"}]}

States: ``queued``, ``running``, ``succeeded`` (every replica exited 0),
``failed`` (a replica failed to launch, exited non-zero, was killed or
lost; ``reason`` names it), ``cancelled``.  A replica is ``pending`` until
placed, ``launching`` until its worker confirms it, then its process's
state; times are Unix seconds.  An unknown id is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from corral.master.job_report import ticket_lines
from corral.master.verbs.base import Args, Limits, Output, Plane, Reply, Shape, Verb, invalid

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse

JobId = Annotated[int, Limits(ge=1, le=2**62)]


def job_id(text: str) -> int:
    """An argparse type: a job id."""
    if not text.isdigit() or not 1 <= int(text) <= 2**62:
        raise invalid(f"bad job id {text!r}: give the number submit printed")
    return int(text)


class JobQuery(Shape):
    id: JobId


class JobVerb(Verb[JobQuery]):
    name = "job"
    summary = "show a job's ticket: state, times, and every replica"
    description = (
        "Each replica shows NODE:PID, its state or how it ended, CPU time and\n"
        "max RSS. `corral logs NODE:PID` shows a replica's log."
    )
    examples = "corral job 12\ncorral job 12 --json"
    path = "/v1/jobs/{id}"
    shape = JobQuery

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("id", type=job_id, metavar="ID")

    def request(self, args: Args) -> dict[str, Any]:
        return {"id": args.id}

    async def call(self, plane: Plane, req: JobQuery) -> Reply:
        jobs = plane.master.jobs
        return jobs.ticket(jobs.get(req.id))

    def text(self, args: Args, reply: Reply) -> Output:
        return Output(ticket_lines(reply))


VERB = JobVerb()
