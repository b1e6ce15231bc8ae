"""``corral submit``: a job of N replicas, placed by memory, queued FIFO when it must wait.

Wire::

    POST /v1/jobs {"argv": ["./sim", "--steps", "100"], "replicas": 4, "mem": 104857600,
                   "spread": false, "app": null, "name": null, "outputs": ["out.txt"],
                   "bundle": "/abs/app.tar.gz", "env": {"MODE": "fast"}}
    -> the job's ticket (see ``corral job``)

``bundle`` (optional) is an absolute path on the master's machine (the
command line runs beside it): a .tar, .tar.gz/.tgz, .tar.zst or .zip file,
or a directory (sent as a tar).  The master keeps a copy in its state
directory; each node that gets a replica receives it once (by sha256) and
unpacks it into the replica's directory before the command runs.

``mem`` is bytes per replica.  A job no known node could ever take (one
replica larger than every node's offer) is refused (400) with each node's
offer; one that does not fit now is queued, and its ticket says why.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

from corral.master.job_report import submitted_line
from corral.master.verbs.base import (
    REMAINDER,
    Args,
    Limits,
    Output,
    Plane,
    Reply,
    Shape,
    UsageError,
    Verb,
    env_of,
    env_option,
    invalid,
    print_json,
)
from corral.master.verbs.shapes import Argv, Env, FilePath, Text
from corral.transport.sizes import SizeError, parse_size

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse

DEFAULT_MEM = "100M"
Glob = Annotated[str, Limits(min_length=1, max_length=1024, pattern=r"^[^\x00]*\Z")]


class SubmitRequest(Shape):
    argv: Argv
    replicas: Annotated[int, Limits(ge=1, le=10_000)] = 1
    mem: Annotated[int, Limits(ge=1)] = 100 * 1024 * 1024
    spread: bool = False
    app: Text | None = None
    name: Text | None = None
    outputs: Annotated[list[Glob], Limits(max_length=256)] = []
    bundle: FilePath | None = None
    env: Env = {}


def size(text: str) -> int:
    """An argparse type: a memory size (``250M``, ``2G``)."""
    try:
        return parse_size(text)
    except SizeError as e:
        raise invalid(str(e)) from None


def count(text: str) -> int:
    """An argparse type: a replica count, 1 to 10,000."""
    try:
        n = int(text)
    except ValueError:
        raise invalid(f"bad replica count {text!r}: give a number") from None
    if not 1 <= n <= 10_000:
        raise invalid(f"bad replica count {n}: give 1 to 10000")
    return n


class Submit(Verb[SubmitRequest]):
    name = "submit"
    summary = "run a job: N replicas of a program, placed by memory, queued when short"
    description = f"""\
Prints the job's id (its state and nodes on stderr). Each replica asks for
--mem (default {DEFAULT_MEM}) of the memory a node offers to jobs (worker
--mem); replicas are placed together or not at all, packed onto the fullest
nodes that fit, or one a node with --spread. A job that does not fit waits
in a first-in-first-out queue: `corral jobs` shows its position and why.
Each replica runs in ROOT/apps/APP/jobs/ID/INDEX/ on its node, told its
share by $CORRAL_JOB, $CORRAL_REPLICA (0 to N-1) and $CORRAL_REPLICAS (N);
`corral fetch ID` brings back its log and the files matching --output.
--bundle PATH (a .tar, .tar.gz, .tar.zst or .zip file, or a directory) is
sent once to each node that gets a replica and unpacked into each replica's
directory first; the command is looked for there (`./run.sh`), and
`make run` runs its Makefile."""
    examples = """\
corral submit --replicas 4 --mem 2G -- ./simulate --steps 1000
corral submit --replicas 8 -- sh -c './shard.sh $CORRAL_REPLICA $CORRAL_REPLICAS'
corral submit --replicas 3 --spread --name sweep --output 'out/*.csv' -- ./sweep.sh
corral submit --bundle app.tar.gz --replicas 2 --output 'out/*' -- make run"""
    json_help = "print the ticket as JSON"
    method = "POST"
    path = "/v1/jobs"
    shape = SubmitRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--replicas", type=count, default=1, metavar="N", help="how many copies (default 1)"
        )
        p.add_argument(
            "--mem",
            type=size,
            default=size(DEFAULT_MEM),
            metavar="SIZE",
            help=f"memory per replica, e.g. 512M, 2G (default {DEFAULT_MEM})",
        )
        p.add_argument("--spread", action="store_true", help="at most one replica per node")
        p.add_argument(
            "--app", metavar="APP", help="the app it runs in (default: the program's name)"
        )
        p.add_argument("--name", metavar="NAME", help="a name to know it by (default: the app)")
        p.add_argument(
            "--output",
            metavar="GLOB",
            action="append",
            default=[],
            help="files `fetch` brings back, relative to the replica's directory (repeatable)",
        )
        p.add_argument(
            "--bundle",
            metavar="PATH",
            help="a .tar/.tar.gz/.tar.zst/.zip file or a directory, unpacked in each replica's "
            "directory before the command runs",
        )
        env_option(p)
        p.add_argument("program", nargs=REMAINDER, metavar="-- PROGRAM [ARGS...]")

    def request(self, args: Args) -> dict[str, Any]:
        program = list(args.program)
        if program and program[0] == "--":
            program = program[1:]
        if not program:
            raise UsageError("nothing to run: give a program after --, e.g. -- ./simulate")
        return {
            "argv": program,
            "replicas": args.replicas,
            "mem": args.mem,
            "spread": bool(args.spread),
            "app": args.app,
            "name": args.name,
            "outputs": list(args.output),
            "bundle": os.path.abspath(os.path.expanduser(args.bundle)) if args.bundle else None,
            "env": env_of(args),
        }

    async def call(self, plane: Plane, req: SubmitRequest) -> Reply:
        jobs = plane.master.jobs
        job = await jobs.submit(
            req.argv,
            count=req.replicas,
            mem=req.mem,
            spread=req.spread,
            app=req.app or None,
            name=req.name or None,
            outputs=req.outputs,
            bundle=req.bundle or None,
            env=dict(req.env),
        )
        return jobs.ticket(job)

    def text(self, args: Args, reply: Reply) -> Output:
        return Output([str(reply.get("id"))], [submitted_line(reply)])

    def show(self, args: Args, reply: Reply) -> int:
        """The id alone on stdout (for scripts); where it went on stderr (for people)."""
        if getattr(args, "json", False):
            print_json(reply)
        else:
            print(reply.get("id"))
        print(submitted_line(reply), file=sys.stderr)
        return 0


VERB = Submit()
