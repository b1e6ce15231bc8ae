"""The ``:`` command line: the CLI's verbs parsed into `Command` values, and completion.

Grammar (the same as the ``corral`` CLI)::

    launch [--node NAME ... | --all] [--app APP] -- PROGRAM [ARGS...]
    stop NODE:PID ...
    kill NODE:PID ...
    logs NODE:PID
    rm APP [--node NAME ... | --all] [--force]

Parsing is pure: it checks the shape of the line; the master checks names.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

VERBS = ("launch", "stop", "kill", "logs", "rm", "deploy")
USAGE = {
    "launch": "launch [--node NAME ... | --all] [--app APP] -- PROGRAM [ARGS...]",
    "stop": "stop NODE:PID ...",
    "kill": "kill NODE:PID ...",
    "logs": "logs NODE:PID",
    "rm": "rm APP [--node NAME ... | --all] [--force]",
}
_TARGET_VERBS = ("stop", "kill", "logs")


class CommandError(Exception):
    """The line is not a valid command; the message is one line."""


@dataclass(frozen=True)
class Command:
    """One parsed command line."""

    verb: str
    targets: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    all_nodes: bool = False
    app: str | None = None
    argv: tuple[str, ...] = ()
    force: bool = False


def parse(line: str) -> Command:
    """Parse one command line; `CommandError` says what is wrong."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CommandError(f"cannot split the line: {e}") from None
    if not words:
        raise CommandError("empty command: try launch, stop, kill, logs or rm")
    verb, args = words[0], words[1:]
    if verb == "deploy":
        raise CommandError("deploy is not available yet")
    if verb in _TARGET_VERBS:
        return _parse_targets(verb, args)
    if verb == "launch":
        return _parse_launch(args)
    if verb == "rm":
        return _parse_rm(args)
    raise CommandError(f"unknown command {verb!r}: try launch, stop, kill, logs or rm")


def _check_target(target: str) -> str:
    node, sep, pid = target.rpartition(":")
    if not sep or not node or not pid.isdigit():
        raise CommandError(f"bad process name {target!r}: expected NODE:PID")
    return target


def _parse_targets(verb: str, args: list[str]) -> Command:
    if not args:
        raise CommandError(f"usage: {USAGE[verb]}")
    if verb == "logs" and len(args) != 1:
        raise CommandError(f"usage: {USAGE['logs']}")
    return Command(verb, targets=tuple(_check_target(a) for a in args))


def _options(args: list[str], flags: tuple[str, ...]) -> tuple[dict[str, list[str]], list[str]]:
    """Split ``--node N --all --app A --force`` off the front of ``args``."""
    opts: dict[str, list[str]] = {}
    rest = list(args)
    while rest and rest[0].startswith("--"):
        opt = rest.pop(0)
        if opt == "--":
            break
        if opt in ("--node", "--app"):
            if not rest:
                raise CommandError(f"{opt} needs a value")
            opts.setdefault(opt, []).append(rest.pop(0))
        elif opt in flags:
            opts[opt] = []
        else:
            raise CommandError(f"unknown option {opt}")
    if "--node" in opts and "--all" in opts:
        raise CommandError("give --node or --all, not both")
    return opts, rest


def _parse_launch(args: list[str]) -> Command:
    opts, argv = _options(args, ("--all",))
    if not argv:
        raise CommandError(f"nothing to launch: {USAGE['launch']}")
    apps = opts.get("--app", [])
    return Command(
        "launch",
        nodes=tuple(opts.get("--node", [])),
        all_nodes="--all" in opts,
        app=apps[-1] if apps else None,
        argv=tuple(argv),
    )


def _parse_rm(args: list[str]) -> Command:
    if not args or args[0].startswith("-"):
        raise CommandError(f"usage: {USAGE['rm']}")
    opts, rest = _options(args[1:], ("--all", "--force"))
    if rest:
        raise CommandError(f"unexpected {rest[0]!r}: {USAGE['rm']}")
    return Command(
        "rm",
        app=args[0],
        nodes=tuple(opts.get("--node", [])),
        all_nodes="--all" in opts,
        force="--force" in opts,
    )


def candidates(
    line: str, nodes: Iterable[str], procs: Iterable[str], apps: Iterable[str]
) -> list[str]:
    """What the last word of ``line`` could become, given the cluster's names."""
    words = line.split(" ")
    word, before = words[-1], [w for w in words[:-1] if w]
    if not before:
        pool: Iterable[str] = VERBS
    elif before[-1] == "--node":
        pool = nodes
    elif before[0] in _TARGET_VERBS:
        pool = procs
    elif before[0] == "rm" and len(before) == 1:
        pool = apps
    elif before[0] in ("launch", "rm") and "--" not in before:
        pool = (
            ("--node", "--all", "--app", "--")
            if before[0] == "launch"
            else ("--node", "--all", "--force")
        )
    else:
        pool = ()
    return sorted(p for p in set(pool) if p.startswith(word))


def complete(
    line: str, nodes: Iterable[str], procs: Iterable[str], apps: Iterable[str]
) -> tuple[str, list[str]]:
    """Complete the last word: the new line and the candidates that remain."""
    found = candidates(line, nodes, procs, apps)
    if not found:
        return line, []
    head = line[: len(line) - len(line.split(" ")[-1])]
    if len(found) == 1:
        return head + found[0] + " ", found
    prefix = found[0]
    for other in found[1:]:
        while not other.startswith(prefix):
            prefix = prefix[:-1]
    return head + prefix, found
