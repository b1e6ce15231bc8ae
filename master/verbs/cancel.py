"""``corral cancel ID ...``: take queued jobs out of the queue, SIGINT running ones.

Wire::

    DELETE /v1/jobs/ID         (several: DELETE /v1/jobs/12,13)
    -> {"jobs": [ticket + {"interrupted": ["NODE:PID", ...]}, ...]}

``interrupted``: the replicas sent SIGINT, which the ticket may already
show as ended.

Every id is checked before anything is cancelled: an unknown job (404), an
ended one or one already cancelled (400) fails the request and changes
nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from corral.master.text import abridged
from corral.master.verbs.base import Args, Limits, Output, Plane, Reply, Shape, Verb
from corral.master.verbs.job import job_id

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse

Ids = Annotated[str, Limits(max_length=20_000, pattern=r"^[0-9]{1,18}(,[0-9]{1,18}){0,999}\Z")]


class CancelRequest(Shape):
    id: Ids


class Cancel(Verb[CancelRequest]):
    name = "cancel"
    summary = "cancel jobs: queued ones leave the queue, running ones get SIGINT"
    description = (
        "Nothing is cancelled if any ID is unknown or has already ended.\n"
        "A running job's replicas get SIGINT; it shows as cancelled at once."
    )
    examples = "corral cancel 12\ncorral cancel 12 13 14"
    json_help = "print the cancelled jobs' tickets as JSON"
    method = "DELETE"
    path = "/v1/jobs/{id}"
    shape = CancelRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("ids", type=job_id, nargs="+", metavar="ID")

    def request(self, args: Args) -> dict[str, Any]:
        return {"id": ",".join(str(i) for i in args.ids)}

    async def call(self, plane: Plane, req: CancelRequest) -> Reply:
        jobs = plane.master.jobs
        ids = [int(i) for i in req.id.split(",")]
        signalled: dict[int, list[str]] = {}
        tickets = jobs.tickets(await jobs.cancel(ids, signalled))
        for ticket in tickets:
            ticket["interrupted"] = signalled.get(ticket["id"], [])
        return {"jobs": tickets}

    def text(self, args: Args, reply: Reply) -> Output:
        out = []
        for job in reply.get("jobs") or []:
            interrupted = job.get("interrupted") or []
            what = f": SIGINT to {abridged(interrupted)}" if interrupted else ""
            out.append(f"job {job.get('id')} cancelled{what}")
        return Output(out)


VERB = Cancel()
