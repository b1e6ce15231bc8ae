"""What a verb is: one record that the CLI, the HTTP API and the dashboard's ``:`` all serve.

Each verb is a module beside this one (Circus's ``circus/commands/`` is the
model), its wire format in its docstring, holding one `Verb` subclass that
declares, once:

- ``declare``: its arguments, with ``summary``, ``description`` and
  ``examples`` for ``--help``.  ``corral VERB`` and the dashboard's
  ``:VERB`` line are both parsed with them (`Parser`);
- ``method``, ``path`` and ``shape``: its HTTP route and the JSON shape of
  its request (a `Shape`; the API decodes bodies and queries into it with
  msgspec, see `master.verbs.wire`), and ``request``, which builds that
  request from parsed arguments;
- ``call``: the `Master` call behind the route, run by the API and by the
  dashboard alike, returning the reply in its JSON shape;
- ``text``: the reply as people read it (lines for stdout and stderr, and
  the exit status), used by the CLI and by the dashboard.

``run`` is the command line's whole verb (send the request, print the
reply); a verb overrides it when it does more than one round trip (``logs
-f`` resumes a broken stream, ``launch`` retries with its request key).

Cheap to import: standard library only and nothing of the master at run
time, so ``corral ps`` loads its record without asyncio or msgspec.
"""

from __future__ import annotations

import sys

from corral.master.names import BadName, parse_target
from corral.master.verbs.quickargs import REMAINDER as REMAINDER

# The command line imports this module for every verb and never needs
# `typing` at run time (about 12% of `corral nodes`' instructions): the
# typing names are for mypy, which reads any `TYPE_CHECKING` as true, and
# the few used at run time have plain stand-ins below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

    from corral.master.control import Master
    from corral.master.deployer import Deployer
    from corral.master.verbs.argv import Parser
else:

    class Generic:
        """``Verb[LaunchRequest]`` at run time: the class itself."""

        def __class_getitem__(cls, item: object) -> type:
            return cls

    def TypeVar(name: str, **_: object) -> str:  # typing's name
        return name


if TYPE_CHECKING:
    Args = argparse.Namespace  # or quickargs.Namespace: the same attributes
    Reply = Any  # a reply in its JSON shape: dicts, lists, str, numbers (or Structs, for the API)
else:
    Args = Reply = object  # only ever annotations

MAX_ITEMS = 10_000  # nodes, targets or libraries named in one request
MAX_ARGS = 4096  # argv elements
MAX_ENV = 256  # --env variables of one launch or job


# --- failures -------------------------------------------------------------------------
class CommandError(Exception):
    """An expected failure of a verb: ``str(self)`` is the one line to show.

    ``status`` is the command line's exit status: 2 for a usage error, 1
    for anything else.
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CommandError):
    """The arguments do not make a command (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


class ApiError(CommandError):
    """The master answered with an error status."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message, 1)
        self.http_status = http_status


class Unreachable(CommandError):
    """No HTTP conversation with the master happened (or it broke off).

    ``connected``: the connection was made, so the request may have reached it.
    """

    def __init__(self, message: str, connected: bool = False) -> None:
        super().__init__(message)
        self.connected = connected


# --- the two sides a verb talks to ----------------------------------------------------
if TYPE_CHECKING:

    class Api(Protocol):
        """The master's control API as the command line reaches it (`corral.client.Client`)."""

        timeout: float

        def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
            """One JSON round trip; `ApiError` or `Unreachable` on failure."""
            ...

        def stream(
            self,
            path: str,
            connect_timeout: float = 10.0,
            method: str = "GET",
            body: Any = None,
            **query: Any,
        ) -> Iterator[Any]:
            """Decoded NDJSON objects until the server ends the stream."""
            ...

    class Plane(NamedTuple):
        """What a verb acts on, on the master's side (the API's, or the dashboard's)."""

        master: Master
        deployer: Deployer
        progress: Callable[[str, int, int], None] | None = None  # deploy: (node, sent, total)

else:
    Api = object  # only ever an annotation

    class Plane:
        """What a verb acts on (see the typed declaration above)."""

        __slots__ = ("deployer", "master", "progress")

        def __init__(self, master: Any, deployer: Any, progress: Any = None) -> None:
            self.master, self.deployer, self.progress = master, deployer, progress


# --- request shapes ---------------------------------------------------------------------
class Limits:
    """Constraints on a field of a `Shape`, as ``msgspec.Meta`` takes them.

    Written in ``Annotated[str, Limits(max_length=64)]``; `master.verbs.wire`
    turns them into ``msgspec.Meta`` when it builds the Struct.
    """

    def __init__(self, **constraints: Any) -> None:
        self.constraints = constraints

    def __repr__(self) -> str:
        return f"Limits({', '.join(f'{k}={v!r}' for k, v in self.constraints.items())})"


class Shape:
    """The JSON shape of a request: annotated fields, defaults for the optional ones.

    Plain Python here (no msgspec for the command line); the API and the
    dashboard decode into the Struct `master.verbs.wire.struct_of` makes of
    it, which refuses unknown fields.
    """


# --- output -----------------------------------------------------------------------------
if TYPE_CHECKING:

    class Output(NamedTuple):
        """A reply as people read it: lines for stdout, lines for stderr, the exit status."""

        out: Sequence[str]
        err: Sequence[str] = ()
        status: int = 0

else:

    class Output:
        """A reply as people read it (see the typed declaration above)."""

        __slots__ = ("err", "out", "status")

        def __init__(self, out: Sequence[str], err: Sequence[str] = (), status: int = 0) -> None:
            self.out, self.err, self.status = out, err, status

        def __eq__(self, other: object) -> bool:
            if not isinstance(other, Output):
                return NotImplemented
            return (self.out, self.err, self.status) == (other.out, other.err, other.status)

        def __repr__(self) -> str:
            return f"Output(out={self.out!r}, err={self.err!r}, status={self.status!r})"


def warn(line: str) -> None:
    """One line on stderr, as every failure is reported."""
    print(f"corral: {line}", file=sys.stderr)


def print_json(reply: Reply) -> None:
    import json  # only for --json: 12 ms of start-up (see transport.quickjson)

    print(json.dumps(reply, indent=2))


def invalid(message: str) -> Exception:
    """The error an argparse ``type`` raises for a bad value (argparse words it around ``message``).

    Only a bad value gets here, and argparse then reads the command line to
    word the error (`quickargs` hands it every line it cannot take), so
    loading argparse for it costs nothing a good command line pays.
    """
    import argparse

    return argparse.ArgumentTypeError(message)


# --- arguments ----------------------------------------------------------------------------
def target(text: str) -> str:
    """An argparse type: a ``NODE:PID`` process name, checked."""
    try:
        parse_target(text)
    except BadName as e:
        raise invalid(str(e)) from None
    return text


_ENV_NAME = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _env_name(name: str) -> bool:
    """A variable name a shell would take (and the API's `shapes.EnvName`)."""
    return 0 < len(name) <= 256 and not name[0].isdigit() and _ENV_NAME.issuperset(name)


def env_var(text: str) -> str:
    """An argparse type: ``NAME=VALUE`` for a program's environment, the name checked."""
    name, eq, value = text.partition("=")
    if not eq:
        raise invalid(f"bad --env {text!r}: give NAME=VALUE")
    if not _env_name(name):
        raise invalid(f"bad --env name {name!r}: use A-Z a-z 0-9 _, not starting with a digit")
    if "\0" in value:
        raise invalid(f"bad --env {name}: the value has a NUL byte")
    return text


def _assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and _env_name(name)


def leading_env(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """A shell's leading ``NAME=VALUE`` words split off a command line: (env, the command).

    For the dashboard's dialogs, where ``MODE=fast ./sim`` reads as it does
    in a shell; a word that is not an assignment ends them (``./x A=1``
    passes ``A=1`` to ``./x``).  `UsageError` past `MAX_ENV` variables.
    """
    env: dict[str, str] = {}
    at = 0
    while at < len(argv) and _assignment(argv[at]):
        name, _, value = argv[at].partition("=")
        env[name] = value
        at += 1
    if len(env) > MAX_ENV:
        raise UsageError(f"too many variables before the command: at most {MAX_ENV}")
    return env, list(argv[at:])


def env_option(p: argparse.ArgumentParser) -> None:
    """``--env NAME=VALUE``, repeatable: variables laid over the worker's own for the program."""
    p.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        type=env_var,
        help="a variable in the program's environment (repeatable; the last of a NAME wins)",
    )


def env_of(args: Args) -> dict[str, str]:
    """The ``--env`` options as a dict, in order (the last of a name wins)."""
    env = dict(text.partition("=")[::2] for text in args.env or ())
    if len(env) > MAX_ENV:
        raise UsageError(f"too many --env variables: at most {MAX_ENV}")
    return env


def node_choice(p: argparse.ArgumentParser, all_help: str = "every alive node") -> None:
    """``--node NAME`` (repeatable) or ``--all``, not both."""
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--node", metavar="NAME", action="append", help="a node (repeatable)")
    chosen.add_argument("--all", action="store_true", help=all_help)


# --- the record ---------------------------------------------------------------------------
R = TypeVar("R", bound=Shape)


class Verb(Generic[R]):
    """One user verb; subclasses fill in the class attributes and the methods below."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line, lower case, no full stop
    description: ClassVar[str] = ""
    examples: ClassVar[str]  # one command per line
    json_help: ClassVar[str] = "print JSON instead of text"
    method: ClassVar[str] = "GET"
    path: ClassVar[str]
    shape: type[Shape]  # R: the request's JSON shape

    # --- arguments ------------------------------------------------------------
    def declare(self, p: argparse.ArgumentParser) -> None:
        """Add the verb's own arguments to ``p``."""

    def arguments(self, p: argparse.ArgumentParser) -> None:
        """Every argument of the verb: its own, then ``--json``."""
        self.declare(p)
        p.add_argument("--json", action="store_true", help=self.json_help)

    def parser(self, hint: str = "") -> Parser:
        """The verb alone (no ``--help``): how the dashboard parses its ``:`` line."""
        from corral.master.verbs.argv import Parser

        p = Parser(prog=self.name, add_help=False, hint=hint)
        self.arguments(p)
        return p

    def usage(self) -> str:
        """``stop NODE:PID [NODE:PID ...]``: the verb's synopsis on one line."""
        text = self.parser().format_usage().removeprefix("usage: ")
        return " ".join(text.split())

    # --- the three places ------------------------------------------------------
    def request(self, args: Args) -> dict[str, Any]:
        """The request for ``args`` in its JSON shape (a body, or a query for GET)."""
        return {}

    async def call(self, plane: Plane, req: R) -> Reply:
        """The master's side: run the verb, return the reply in its JSON shape."""
        raise NotImplementedError

    def text(self, args: Args, reply: Reply) -> Output:
        """The reply for people."""
        raise NotImplementedError

    # --- the command line ---------------------------------------------------------
    def run(self, args: Args, api: Api) -> int:
        """``corral VERB``: one round trip, then the reply printed; the exit status."""
        return self.show(args, self.send(api, self.request(args)))

    def route(self, req: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The path of ``req``'s route (``{field}`` parts filled in) and the rest of ``req``."""
        if "{" not in self.path:
            return self.path, req
        rest = dict(req)
        path = self.path
        while "{" in path:
            head, _, tail = path.partition("{")
            field, _, tail = tail.partition("}")
            path = f"{head}{rest.pop(field)}{tail}"
        return path, rest

    def send(self, api: Api, req: dict[str, Any]) -> Reply:
        """``req`` to the verb's route: as the query of a GET or DELETE, else as the JSON body."""
        path, req = self.route(req)
        if self.method in ("GET", "DELETE"):
            return api.request(self.method, path, **req)
        return api.request(self.method, path, req)

    def show(self, args: Args, reply: Reply) -> int:
        """Print ``reply`` (as JSON with ``--json``; failures on stderr either way)."""
        out = self.text(args, reply)
        if getattr(args, "json", False):
            print_json(reply)
        elif out.out:
            print("\n".join(out.out))
        for line in out.err:
            warn(line)
        return out.status
