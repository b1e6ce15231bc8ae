"""``corral VERB ...``: parse the command line and dispatch to one verb.

Only the standard library is imported up front; each verb imports what it
needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from corral.client import CliError

DESCRIPTION = """\
Run programs on many Linux machines from one terminal.

One master controls a worker daemon on every node. `corral master` runs
the control plane (a dashboard, or --headless), `corral worker` runs on each
node, and the other verbs talk to a running master over its HTTP API.
"""

EPILOG = """\
The client verbs find the master through --api, $CORRAL_API, the `api` file
in the master's state directory, or 127.0.0.1:7071, and read its token from
$CORRAL_TOKEN or STATE_DIR/token (STATE_DIR: --state-dir, $CORRAL_STATE_DIR,
or ~/.local/state/corral).

Try it on one machine:  corral demo --headless
"""

CLIENT_VERBS = ("nodes", "ps", "launch", "stop", "kill", "logs", "usage", "rm")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (try `{self.prog} --help`)", 2)


def _verb(
    sub: argparse._SubParsersAction[Parser],
    name: str,
    summary: str,
    description: str,
    examples: str,
    parents: Sequence[Parser] = (),
) -> Parser:
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary}\n\n{description}".rstrip(),
        epilog="example:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected 1 to 64, got {text!r}")
    return int(text)


def build_parser(worker_verb: bool = False) -> Parser:
    """The whole command line; ``worker_verb`` asks the worker daemon for its flags."""
    parser = Parser(
        prog="corral",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from corral import __version__

    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)

    client = Parser(add_help=False)
    where = client.add_argument_group("finding the master")
    where.add_argument(
        "--api", metavar="HOST:PORT", help="the master's control API (default: see corral --help)"
    )
    where.add_argument(
        "--state-dir", metavar="DIR", help="the master's state directory (for its token and api)"
    )
    as_json = Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # --- daemons -------------------------------------------------------------------
    p = _verb(
        sub,
        "master",
        "run the control plane: the dashboard, or --headless",
        "Accepts workers on --listen and serves the control API on --api. The\n"
        "cluster token is created (mode 0600) in the state directory on first start.",
        "corral master --headless --listen 0.0.0.0:7070 --api 127.0.0.1:7071",
    )
    p.add_argument(
        "--listen", metavar="HOST:PORT", default="0.0.0.0:7070", help="where workers connect"
    )
    p.add_argument(
        "--api", metavar="HOST:PORT", default="127.0.0.1:7071", help="the HTTP control API"
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="token, event log, addresses (default: $CORRAL_STATE_DIR or ~/.local/state/corral)",
    )
    p.add_argument("--headless", action="store_true", help="no dashboard: print events instead")
    p.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=_positive,
        default=1.0,
        help="heartbeat period announced to workers (default 1)",
    )

    p = _verb(
        sub,
        "worker",
        "run the worker daemon on this node",
        "Dials the master, runs the programs it is told to, and reports on them.\n"
        "The cluster token comes from --token-file or $CORRAL_TOKEN.",
        "CORRAL_TOKEN=$(cat ~/.local/state/corral/token) \\\n"
        "  corral worker --master 10.0.0.1:7070 --name n1 --root /srv/corral",
    )
    if worker_verb:
        from corral.serve import worker_arguments

        worker_arguments(p)

    p = _verb(
        sub,
        "demo",
        "a master and N local workers in one command",
        "Everything lives in a fresh temporary directory. Ctrl-C ends the master,\n"
        "the workers and every program launched on them, and removes the directory.",
        "corral demo --workers 3 --headless\n"
        "export CORRAL_STATE_DIR=/tmp/corral-demo-XXXX/state   # printed by the demo\n"
        "corral launch --all -- sleep 60",
    )
    p.add_argument("--workers", metavar="N", type=_workers, default=3, help="how many (default 3)")
    p.add_argument("--headless", action="store_true", help="no dashboard: print events instead")

    # --- client verbs --------------------------------------------------------------
    p = _verb(
        sub,
        "nodes",
        "list the nodes and their state",
        "States: alive, suspect (one beat missed), lost (two missed), left.",
        "corral nodes\ncorral nodes --json | jq -r '.nodes[].name'",
        [client, as_json],
    )

    p = _verb(
        sub,
        "ps",
        "list processes (running ones, or --all)",
        "A process is named NODE:PID. Ended processes show how they ended:\n"
        "'exited 3', 'killed by SIGINT', 'killed by SIGSEGV, core dumped'.",
        "corral ps\ncorral ps --node n1 --all",
        [client, as_json],
    )
    p.add_argument("--node", metavar="NAME", help="only this node")
    p.add_argument("--all", action="store_true", help="ended processes too")

    p = _verb(
        sub,
        "launch",
        "start a program on chosen nodes",
        "Prints NODE:PID for every process started. The program runs in its own\n"
        "session inside APP (default: the program's name); its output goes to a log.",
        "corral launch --node n1 --node n2 -- sleep 60\n"
        "corral launch --all --app web -- ./server --port 8080",
        [client],
    )
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--node", metavar="NAME", action="append", help="a node (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every alive node")
    p.add_argument("--app", metavar="APP", help="the app to launch in ([A-Za-z0-9._-]{1,64})")
    p.add_argument(
        "--key",
        metavar="KEY",
        help="request key (default: a new one): a retry with the same KEY returns the "
        "processes the first launch started and starts no more",
    )
    p.add_argument("--json", action="store_true", help="print the launched processes as JSON")
    p.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")

    for name, sig, how in (("stop", "SIGINT", "gracefully"), ("kill", "SIGKILL", "forcefully")):
        p = _verb(
            sub,
            name,
            f"stop processes {how} ({sig} to each process group)",
            f"Prints 'delivered {sig} to NODE:PID' for each; a process that had\n"
            "already ended is reported on stderr and makes the exit status 1.",
            f"corral {name} n1:4242 n2:977",
            [client],
        )
        p.add_argument("targets", nargs="+", metavar="NODE:PID")
        p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = _verb(
        sub,
        "logs",
        "print a process's log (stdout and stderr)",
        "With -f, keeps printing as the log grows until the process has ended;\n"
        "a dropped connection is resumed from the last byte printed.",
        "corral logs n1:4242 --tail 100\ncorral logs -f n1:4242",
        [client],
    )
    p.add_argument("target", metavar="NODE:PID")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the process ends")
    p.add_argument("--tail", metavar="N", default="10", help="last N lines, or 'all' (default 10)")

    p = _verb(
        sub,
        "usage",
        "CPU time and memory of processes, and each node's children totals",
        "Per process: CPU user and system seconds, current and max RSS. Per node:\n"
        "the totals of every child the worker has reaped (getrusage RUSAGE_CHILDREN).",
        "corral usage\ncorral usage --node n1 --json",
        [client, as_json],
    )
    p.add_argument("--node", metavar="NAME", help="only this node")

    p = _verb(
        sub,
        "rm",
        "remove an app's files from nodes (every alive node by default)",
        "Refused while the app has running processes unless --force (which stops\n"
        "them first). Logs are kept unless --logs.",
        "corral rm web --node n1\ncorral rm web --all --force --logs",
        [client],
    )
    p.add_argument("app", metavar="APP")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--node", metavar="NAME", action="append", help="a node (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every alive node (the default)")
    p.add_argument("--force", action="store_true", help="stop the app's processes first")
    p.add_argument("--logs", action="store_true", help="remove its logs too")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    from corral import deploy_verb  # stdlib-only at import, like the other verbs

    deploy_verb.add_parser(sub, [client])
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    verb: str = args.verb
    if verb in CLIENT_VERBS:
        from corral import verbs

        result: int = getattr(verbs, verb)(args)
        return result
    if verb in ("master", "worker"):
        from corral import serve

        result = getattr(serve, verb)(args)
        return result
    if verb == "deploy":
        from corral import deploy_verb

        return deploy_verb.run(args)
    if verb == "demo":
        from corral import demo

        return demo.run(args)
    raise CliError(f"unknown verb {verb!r} (try `corral --help`)", 2)  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``corral`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    try:
        try:
            args = build_parser(worker_verb=first == "worker").parse_args(argv)
            if args.verb is None:
                raise CliError("no verb given (try `corral --help`)", 2)
            return _dispatch(args)
        except CliError as e:
            print(f"corral: {e}", file=sys.stderr)
            return e.status
        except BrokenPipeError:
            # The reader went away (`corral logs -f ... | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
