"""``corral fetch ID``: a job's logs and ``--output`` files, into ``DIR/ID/INDEX-NODE/``.

Wire::

    POST /v1/jobs/ID/fetch {"to": "/abs/results", "purge": false}
    -> NDJSON: {"progress": {"node": "n1", "done": 1048576, "total": 4194304}} ...
               then {"result": {"job", "dir", "seconds",
                                "replicas": [{"index", "node", "dir", "files", "bytes",
                                              "errors", "purged", "kept"}]}}
       (or {"error": "..."} if it failed on the way)

``to`` is a directory on the master's machine (the command line runs beside
it); ``DIR/ID`` is made.  Files come over SFTP with deploy's SSH settings
and host-key rules.  Each replica's log is ``LAUNCH.log`` in its directory.
It works while the job runs (what exists so far) and after.  A ``to`` that
is a file, or a job none of whose replicas started, is a 400 and writes
nothing.  With ``purge``, each ended replica whose files all arrived has its
working directory removed on its node (``purged``); ``kept`` says why not.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

from corral.master.text import human_bytes
from corral.master.verbs.base import (
    Api,
    Args,
    CommandError,
    Output,
    Plane,
    Reply,
    Shape,
    Verb,
    print_json,
)
from corral.master.verbs.job import JobId, job_id
from corral.master.verbs.shapes import FilePath

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any

FETCH_TIMEOUT = 6 * 3600.0


class FetchRequest(Shape):
    id: JobId
    to: FilePath
    purge: bool = False


def result_lines(result: dict[str, Any]) -> Output:
    out: list[str] = []
    err: list[str] = []
    for r in result.get("replicas") or []:
        where = f"{r.get('index')}-{r.get('node')}"
        files = r.get("files") or []
        if r.get("errors") and not files:  # nothing came: its errors say why
            err.extend(f"fetch {where}: {e}" for e in r["errors"])
            continue
        out.append(
            f"{where}: {len(files)} file{'s' if len(files) != 1 else ''} "
            f"({human_bytes(r.get('bytes') or 0)}) in {r.get('dir')}"
        )
        err.extend(f"fetch {where}: {e}" for e in r.get("errors") or [])
        if r.get("purged"):
            out.append(f"{where}: working directory removed from {r.get('node')}")
        elif r.get("kept"):
            out.append(f"{where}: working directory kept: {r['kept']}")
    return Output(out, err, 1 if err else 0)


class FetchVerb(Verb[FetchRequest]):
    name = "fetch"
    summary = "bring a job's logs and --output files home, into DIR/ID/INDEX-NODE/"
    description = (
        "Copies each started replica's log (LAUNCH.log) and the files of its\n"
        "directory that match the job's --output patterns, over SFTP with the\n"
        "SSH settings of deploy. Works while the job runs and after it ended;\n"
        "fetching again refreshes the copies. --purge then removes each ended\n"
        "replica's working directory from its node once its files are all home."
    )
    examples = "corral fetch 12\ncorral fetch 12 --to ~/results\ncorral fetch 12 --purge"
    json_help = "print the result as JSON"
    method = "POST"
    path = "/v1/jobs/{id}/fetch"
    shape = FetchRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("id", type=job_id, metavar="ID")
        p.add_argument(
            "--to", metavar="DIR", default=".", help="where to put ID/ (default: this directory)"
        )
        p.add_argument(
            "--purge",
            action="store_true",
            help="then remove the replicas' working directories on the nodes",
        )

    def request(self, args: Args) -> dict[str, Any]:
        to = os.path.abspath(os.path.expanduser(args.to))
        return {"id": args.id, "to": to, "purge": bool(args.purge)}

    async def call(self, plane: Plane, req: FetchRequest) -> Reply:
        from corral.master.fetch import Fetch, prepare

        ssh = plane.deployer.ssh_config()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def progress(node: str, done: int, total: int) -> None:
            queue.put_nowait({"progress": {"node": node, "done": done, "total": total}})

        # Errors in the request (unknown job, a file in the way) answer as a
        # status, before the stream starts.
        job, dest = prepare(plane.master, req.id, req.to)
        task = asyncio.ensure_future(Fetch(plane.master, ssh, job, dest, progress, req.purge).run())
        return _stream(task, queue)

    def text(self, args: Args, reply: Reply) -> Output:
        return result_lines(reply.get("result") or {})

    def run(self, args: Args, api: Api) -> int:
        api.timeout = FETCH_TIMEOUT
        req = self.request(args)
        path, body = self.route(req)
        tty = sys.stderr.isatty()
        shown = False
        result: dict[str, Any] | None = None
        totals: dict[str, tuple[int, int]] = {}
        for item in api.stream(path, method="POST", body=body, connect_timeout=FETCH_TIMEOUT):
            if "error" in item:
                raise CommandError(str(item["error"]))
            if "progress" in item and tty and not args.json:
                p = item["progress"]
                totals[p["node"]] = (int(p["done"]), int(p["total"]))
                done = sum(d for d, _ in totals.values())
                total = sum(t for _, t in totals.values()) or 1
                print(
                    f"\rfetching job {args.id}: {min(100, done * 100 // total)}% "
                    f"({human_bytes(done)} of {human_bytes(total)})",
                    end="",
                    file=sys.stderr,
                )
                shown = True
            if "result" in item:
                result = item["result"]
        if shown:
            print(file=sys.stderr)
        if result is None:
            raise CommandError("the master ended the fetch without a result")
        if args.json:
            print_json(result)
            return 1 if any(r.get("errors") for r in result.get("replicas") or []) else 0
        return self.show(args, {"result": result})


def _builtins(result: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(result)


async def _stream(
    task: asyncio.Future[Any], queue: asyncio.Queue[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """Progress lines while ``task`` runs, then its result."""
    try:
        while not task.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        while not queue.empty():
            yield queue.get_nowait()
        yield {"result": _builtins(task.result())}
    finally:
        if not task.done():
            task.cancel()


VERB = FetchVerb()
