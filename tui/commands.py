"""The ``:`` command line: the CLI's verbs parsed into `Command` values, and completion.

Grammar (the same as the ``corral`` CLI)::

    launch [--node NAME ... | --all] [--app APP] -- PROGRAM [ARGS...]
    stop NODE:PID ...
    kill NODE:PID ...
    logs NODE:PID
    rm APP [--node NAME ... | --all] [--force] [--logs]
    deploy FILE [--app APP] [--node NAME ... | --all] [--lib PATH ...] [--dry-run]
           [--trust-host-key]

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
    "rm": "rm APP [--node NAME ... | --all] [--force] [--logs]",
    "deploy": (
        "deploy FILE [--app APP] [--node NAME ... | --all] [--lib PATH ...] [--dry-run]"
        " [--trust-host-key]"
    ),
}
_RM_FLAGS = ("--all", "--force", "--logs")
_DEPLOY_FLAGS = ("--all", "--dry-run", "--trust-host-key")
_VALUED = {"launch": ("--node", "--app"), "rm": ("--node",), "deploy": ("--node", "--app", "--lib")}
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
    logs: bool = False  # rm: delete the app's logs too
    file: str = ""  # deploy: the local file
    libs: tuple[str, ...] = ()
    dry_run: bool = False
    trust_host_key: bool = False


def parse(line: str) -> Command:
    """Parse one command line; `CommandError` says what is wrong."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CommandError(f"cannot split the line: {e}") from None
    if not words:
        raise CommandError("empty command: try launch, stop, kill, logs, rm or deploy")
    verb, args = words[0], words[1:]
    if verb in _TARGET_VERBS:
        return _parse_targets(verb, args)
    if verb == "launch":
        return _parse_launch(args)
    if verb == "rm":
        return _parse_rm(args)
    if verb == "deploy":
        return _parse_deploy(args)
    raise CommandError(f"unknown command {verb!r}: try launch, stop, kill, logs, rm or deploy")


def _check_target(target: str) -> str:
    node, sep, pid = target.rpartition(":")
    if not sep or not node or not (pid.isascii() and pid.isdigit()):
        raise CommandError(f"bad process name {target!r}: expected NODE:PID")
    return target


def _parse_targets(verb: str, args: list[str]) -> Command:
    if not args:
        raise CommandError(f"usage: {USAGE[verb]}")
    if verb == "logs" and len(args) != 1:
        raise CommandError(f"usage: {USAGE['logs']}")
    return Command(verb, targets=tuple(_check_target(a) for a in args))


def _options(
    args: list[str], flags: tuple[str, ...], valued: tuple[str, ...]
) -> tuple[dict[str, list[str]], list[str]]:
    """Split options (``flags`` alone, ``valued`` with a value) off the front of ``args``."""
    opts: dict[str, list[str]] = {}
    rest = list(args)
    while rest and rest[0].startswith("--"):
        opt = rest.pop(0)
        if opt == "--":
            break
        if opt in valued:
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
    opts, argv = _options(args, ("--all",), _VALUED["launch"])
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


def _one_and_options(
    verb: str, args: list[str], flags: tuple[str, ...]
) -> tuple[str, dict[str, list[str]]]:
    """``WORD [options]`` with the options before or after WORD, as the CLI allows."""
    opts, rest = _options(args, flags, _VALUED[verb])
    if not rest or rest[0].startswith("-"):
        raise CommandError(f"usage: {USAGE[verb]}")
    more, after = _options(rest[1:], flags, _VALUED[verb])
    if after:
        raise CommandError(f"unexpected {after[0]!r}: {USAGE[verb]}")
    for opt, values in more.items():
        opts.setdefault(opt, []).extend(values)
    if "--node" in opts and "--all" in opts:
        raise CommandError("give --node or --all, not both")
    return rest[0], opts


def _parse_rm(args: list[str]) -> Command:
    app, opts = _one_and_options("rm", args, _RM_FLAGS)
    return Command(
        "rm",
        app=app,
        nodes=tuple(opts.get("--node", [])),
        all_nodes="--all" in opts,
        force="--force" in opts,
        logs="--logs" in opts,
    )


def _parse_deploy(args: list[str]) -> Command:
    file, opts = _one_and_options("deploy", args, _DEPLOY_FLAGS)
    if not opts.get("--node") and "--all" not in opts:
        raise CommandError("deploy where? give --node NAME or --all")
    apps = opts.get("--app", [])
    return Command(
        "deploy",
        file=file,
        app=apps[-1] if apps else None,
        nodes=tuple(opts.get("--node", [])),
        all_nodes="--all" in opts,
        libs=tuple(opts.get("--lib", [])),
        dry_run="--dry-run" in opts,
        trust_host_key="--trust-host-key" in opts,
    )


_OPTIONS = {
    "launch": ("--node", "--all", "--app", "--"),
    "rm": ("--node", *_RM_FLAGS),
    "deploy": ("--node", "--app", "--lib", *_DEPLOY_FLAGS),
}


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
    elif before[-1] == "--app":
        pool = apps
    elif before[-1] == "--lib":
        pool = ()  # a local path: not completed
    elif before[0] in _TARGET_VERBS:
        pool = procs
    elif before[0] == "rm" and len(before) == 1 and not word.startswith("-"):
        pool = apps
    elif before[0] == "deploy" and len(before) == 1 and not word.startswith("-"):
        pool = ()  # FILE: a local path, not completed
    elif before[0] in _OPTIONS and "--" not in before:
        pool = _OPTIONS[before[0]]
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
