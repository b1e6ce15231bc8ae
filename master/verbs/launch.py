"""``corral launch``: start a program on chosen nodes.

Wire::

    POST /v1/launch {"argv": ["sleep", "60"], "nodes": ["n1"], "all": false,
                     "app": null, "key": "5f0c...", "env": {"MODE": "fast"}}
    -> {"procs": [ProcView + "key"], "errors": {"n2": "n2 is lost (...)"}}

``app`` defaults to the program's name; ``env`` (optional) is laid over
the worker's own environment for the program.  ``key`` is the operator's request
key: a retry with the same key returns the first result and starts nothing
new (a key used for another launch is a 400).  A node where the launch
failed is its entry in ``errors``; the others still launch.
"""

from __future__ import annotations

import os

from corral.master.verbs.base import (
    REMAINDER,
    Api,
    Args,
    Output,
    Plane,
    Reply,
    Shape,
    Unreachable,
    UsageError,
    Verb,
    env_of,
    env_option,
    node_choice,
)

# For mypy only: the command line loads this module on every run, without typing;
# the API resolves these names in the annotations (`wire._names`).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from corral.master.verbs.shapes import Argv, Env, Key, Names, Text


class LaunchRequest(Shape):
    argv: Argv
    nodes: Names = []
    all: bool = False
    app: Text | None = None
    key: Key | None = None
    env: Env = {}


def new_key() -> str:
    """A fresh request key: one per operator action."""
    return os.urandom(16).hex()


class Launch(Verb[LaunchRequest]):
    name = "launch"
    summary = "start a program on chosen nodes"
    description = (
        "Prints NODE:PID for every process started. The program runs in its own\n"
        "session inside APP (default: the program's name); its output goes to a log."
    )
    examples = (
        "corral launch --node n1 --node n2 -- sleep 60\n"
        "corral launch --all --app web -- ./server --port 8080\n"
        "corral launch --node n1 --env MODE=fast --env LOG_LEVEL=debug -- ./worker"
    )
    json_help = "print the launched processes as JSON"
    method = "POST"
    path = "/v1/launch"
    shape = LaunchRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        node_choice(p)
        p.add_argument("--app", metavar="APP", help="the app to launch in ([A-Za-z0-9._-]{1,64})")
        p.add_argument(
            "--key",
            metavar="KEY",
            help="request key (default: a new one): a retry with the same KEY returns the "
            "processes the first launch started and starts no more",
        )
        env_option(p)
        p.add_argument("program", nargs=REMAINDER, metavar="-- PROGRAM [ARGS...]")

    def request(self, args: Args) -> dict[str, Any]:
        program = list(args.program)
        if program and program[0] == "--":
            program = program[1:]
        if not program:
            raise UsageError("nothing to launch: give a program after --, e.g. -- sleep 30")
        if not args.node and not args.all:
            raise UsageError("no node chosen: give --node NAME (repeatable) or --all")
        return {
            "argv": program,
            "nodes": args.node or [],
            "all": bool(args.all),
            "app": args.app,
            # One key per invocation: if the reply is lost, asking again with it
            # returns the processes this launch started instead of starting more.
            "key": args.key or new_key(),
            "env": env_of(args),
        }

    async def call(self, plane: Plane, req: LaunchRequest) -> Reply:
        from corral.master.verbs.wire import proc_json

        res = await plane.master.launch(
            req.argv,
            nodes=req.nodes,
            all_nodes=req.all,
            app=req.app or None,
            key=req.key,
            env=dict(req.env),
        )
        return {"procs": [proc_json(p) for p in res.procs], "errors": res.errors}

    def text(self, args: Args, reply: Reply) -> Output:
        errors: dict[str, str] = reply.get("errors") or {}
        return Output(
            [f"{p['node']}:{p['pid']}" for p in reply.get("procs", [])],
            [f"launch on {node} failed: {message}" for node, message in errors.items()],
            1 if errors else 0,
        )

    def run(self, args: Args, api: Api) -> int:
        """Ask once more with the same key if the master went away: at most one launch."""
        req = self.request(args)
        try:
            try:
                reply = self.send(api, req)
            except Unreachable:
                reply = self.send(api, req)
        except Unreachable as e:
            if not e.connected:
                raise
            # It may have started before the master went away: say how to find out safely.
            raise Unreachable(
                f"{e}; the launch may have started: rerun with --key {req['key']} to get its "
                "processes without starting more"
            ) from None
        return self.show(args, reply)


VERB = Launch()
