"""``corral VERB ...``: parse the command line and dispatch to one verb.

The client verbs (``nodes``, ``ps``, ``launch``, ...) are the records of
`corral.master.verbs`: their arguments, help, request and output are
declared there, once, and the dashboard's ``:`` line parses with the same
declarations.  The process verbs (``master``, ``worker``, ``demo``) are
declared here.  Only the standard library is imported up front, and only
the record of the verb given is loaded.
"""

from __future__ import annotations

import os
import sys

from corral.master import verbs
from corral.master.verbs.base import CommandError, UsageError, Verb, invalid
from corral.master.verbs.quickargs import Declared

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

    from corral.master.verbs.argv import Parser

    Subparsers = argparse._SubParsersAction  # what add_subparsers returns

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
or ~/.local/state/corral). While a `corral demo` of the same user runs and
nothing else names a master, they reach the demo.

Try it on one machine:  corral demo --headless
"""


def _help(summary: str, description: str, examples: str) -> dict[str, Any]:
    """``add_parser`` keywords: the summary, then the description, then examples."""
    from corral.master.verbs.argv import Formatter

    lines = examples.strip().splitlines()
    return {
        "help": summary,
        "description": f"{summary}\n\n{description}".rstrip(),
        "epilog": "Example:\n" + "\n".join(f"  {line}" for line in lines),
        "formatter_class": Formatter,
    }


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise invalid(f"not a number: {text!r}") from None
    if not value > 0:
        raise invalid(f"must be above 0: {text!r}")
    return value


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 64:
        raise invalid(f"expected 1 to 64, got {text!r}")
    return int(text)


# --- the process verbs -----------------------------------------------------------------
def _master_verb(sub: Subparsers[Parser]) -> None:
    p = sub.add_parser(
        "master",
        **_help(
            "run the control plane: the dashboard, or --headless",
            "Accepts workers on --listen and serves the control API on --api. The\n"
            "cluster token is created (mode 0600) in the state directory on first start.",
            "corral master --headless --listen 0.0.0.0:7070 --api 127.0.0.1:7071",
        ),
    )
    p.add_argument(
        "--listen", metavar="HOST:PORT", default="0.0.0.0:7070", help="where workers connect"
    )
    p.add_argument(
        "--api",
        metavar="HOST:PORT",
        default="127.0.0.1:7071",
        help="the HTTP control API (off loopback: over TLS, with the cluster CA)",
    )
    p.add_argument(
        "--advertise",
        metavar="HOST",
        help="the address other machines reach this master at, where --listen or --api "
        "binds every address (default: this machine's address on its route to etcd, or "
        "to the outside)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="token, event log, addresses (default: $CORRAL_STATE_DIR or ~/.local/state/corral)",
    )
    p.add_argument("--headless", action="store_true", help="no dashboard: print events instead")
    _config_flag(p)
    p.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=_positive,
        default=1.0,
        help="heartbeat period announced to workers (default 1)",
    )
    ha = p.add_argument_group("standby masters (several masters on etcd, one leads)")
    ha.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        help="etcd's client URLs: campaign for the lead, keep jobs in etcd",
    )
    ha.add_argument(
        "--name", metavar="NAME", help="this master's name among them (default: host-pid)"
    )
    ha.add_argument(
        "--lease",
        metavar="SECONDS",
        type=_positive,
        default=5.0,
        help="the leader's lease TTL; renewed every third of it (default 5)",
    )


def _config_flag(p: Parser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="the dashboard's settings: theme, columns, filter, keys (default: "
        "$XDG_CONFIG_HOME/corral/dashboard.toml, else ~/.config/corral/dashboard.toml)",
    )


def _worker_verb(sub: Subparsers[Parser], with_flags: bool) -> None:
    """``worker``; ``with_flags`` asks the worker daemon for its flags (it is the verb given)."""
    p = sub.add_parser(
        "worker",
        **_help(
            "run the worker daemon on this node",
            "Dials the master, runs the programs it is told to, and reports on them.\n"
            "The cluster token comes from --token-file or $CORRAL_TOKEN.",
            "CORRAL_TOKEN=$(cat ~/.local/state/corral/token) \\\n"
            "  corral worker --master 10.0.0.1:7070 --name n1 --root /srv/corral",
        ),
    )
    if with_flags:
        from corral.serve import worker_arguments

        worker_arguments(p)


def _demo_verb(sub: Subparsers[Parser]) -> None:
    p = sub.add_parser(
        "demo",
        **_help(
            "a master and N local workers in one command",
            "Everything lives in a fresh temporary directory. Ctrl-C (or q in the\n"
            "dashboard) ends the master, the workers and every program launched on\n"
            "them, and removes the directory. With sshd installed the demo runs a\n"
            "private one on loopback, so deploy works as it is.",
            "corral demo --workers 3 --headless\n"
            "corral launch --all -- sleep 60   # in another shell: nothing to export",
        ),
    )
    p.add_argument("--workers", metavar="N", type=_workers, default=3, help="how many (default 3)")
    p.add_argument("--headless", action="store_true", help="no dashboard: print events instead")
    _config_flag(p)


# --- the client verbs ------------------------------------------------------------------
def _finding_the_master(p: Parser | Declared) -> None:
    """The options every client verb shares: where the master is."""
    where = p.add_argument_group("finding the master")
    where.add_argument(
        "--api", metavar="HOST:PORT", help="the master's control API (default: see corral --help)"
    )
    where.add_argument(
        "--state-dir", metavar="DIR", help="the master's state directory (for its token and api)"
    )


def _parent() -> Parser:
    from corral.master.verbs.argv import Parser

    parent = Parser(add_help=False)
    _finding_the_master(parent)
    return parent


def _client_verb(sub: Subparsers[Parser], verb: Verb[Any], parent: Parser) -> None:
    p = sub.add_parser(
        verb.name, parents=[parent], **_help(verb.summary, verb.description, verb.examples)
    )
    verb.arguments(p)


def build_parser(given: str | None = None) -> Parser:
    """The whole command line.

    ``given`` is the verb on the command line: of the client verbs only its
    record is loaded and it is the only verb the parser knows (the others
    are named, for the list of choices, when ``given`` is no client verb),
    and the worker daemon is asked for its flags only for ``worker``.  None
    loads everything, for ``corral --help``.
    """
    from corral import __version__
    from corral.master.verbs.argv import Parser

    parser = Parser(prog="corral", description=DESCRIPTION, epilog=EPILOG)

    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    if given in verbs.NAMES:
        # A client verb alone: every parser argparse makes costs start-up time
        # (its gettext lookups), and the others are not needed to parse this one.
        _client_verb(sub, verbs.get(given), _parent())
        return parser
    _master_verb(sub)
    _worker_verb(sub, given == "worker")
    _demo_verb(sub)
    parent = _parent()
    for name in verbs.NAMES:
        if given in (None, name):
            _client_verb(sub, verbs.get(name), parent)
        else:
            sub.add_parser(name, add_help=False)
    return parser


def quick_parse(argv: Sequence[str]) -> argparse.Namespace | None:
    """A client verb's plain command line read without argparse (see `quickargs`), else None."""
    if not argv or argv[0] not in verbs.NAMES:
        return None
    declared = Declared()
    _finding_the_master(declared)
    verbs.get(argv[0]).arguments(declared)  # type: ignore[arg-type]  # records the same calls
    return declared.parse(argv[1:], verb=argv[0])  # type: ignore[return-value]


def _dispatch(args: argparse.Namespace) -> int:
    verb: str = args.verb
    if verb in verbs.NAMES:
        from corral.client import Client

        return verbs.get(verb).run(args, Client.from_args(args.api, args.state_dir))
    if verb in ("master", "worker"):
        from corral import serve

        result: int = getattr(serve, verb)(args)
        return result
    if verb == "demo":
        from corral import demo

        return demo.run(args)
    raise UsageError(f"unknown verb {verb!r} (try `corral --help`)")  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``corral`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    given = next((a for a in argv if not a.startswith("-")), None)
    try:
        try:
            args = quick_parse(argv) or build_parser(given).parse_args(argv)
            if args.verb is None:
                raise UsageError("no verb given (try `corral --help`)")
            return _dispatch(args)
        except CommandError as e:
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
