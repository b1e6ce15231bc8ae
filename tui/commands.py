"""The ``:`` command line: the CLI's verbs, parsed with their own declarations, and completion.

Every verb of `corral.master.verbs` works here, parsed by the very argparse
declarations ``corral VERB`` uses (`Verb.parser`), so the two grammars
cannot drift: ``:stop n1:4242``, ``:launch --all -- sleep 60``,
``:deploy ./build/hello --all``, ``:ps --all``.  Parsing is pure: it checks
the shape of the line and builds the verb's request; the master checks
names when the dashboard runs it.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable
from typing import Any, NamedTuple

from corral.master import verbs
from corral.master.verbs.base import CommandError, Verb

VERBS = verbs.NAMES
USAGE = {name: verbs.get(name).usage() for name in VERBS}
# Words of the screen, not verbs: ``:q`` quits as ``q`` does, ``:help`` opens ``?``.
SCREEN_WORDS = {"q": "quit", "quit": "quit", "h": "help", "help": "help", "events": "events"}
_TRY = f"try {', '.join(VERBS)}, events, help or quit"


def screen_word(line: str) -> str | None:
    """The screen action a line names ("quit", "help"), or None for a verb's line."""
    words = line.split()
    return SCREEN_WORDS.get(words[0]) if len(words) == 1 else None


class Command(NamedTuple):
    """One parsed command line: the verb, its arguments, and its request to the master."""

    verb: Verb[Any]
    args: argparse.Namespace
    request: dict[str, Any]


def parse(line: str, node: str | None = None) -> Command:
    """Parse one command line; `CommandError` says what is wrong, in one line.

    ``node`` is the node the screen has selected: ``launch`` with neither
    ``--node`` nor ``--all`` runs there, as the launch dialog does.
    """
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CommandError(f"cannot split the line: {e}", 2) from None
    if not words:
        raise CommandError(f"empty command: {_TRY}", 2)
    name, rest = words[0], words[1:]
    if name not in VERBS:
        raise CommandError(f"unknown command {name!r}: {_TRY}", 2)
    verb = verbs.get(name)
    args = verb.parser(hint=f"(usage: {USAGE[name]})").parse_args(rest)
    if name == "launch" and node and not args.node and not args.all:
        args.node = [node]
    return Command(verb, args, verb.request(args))


# --- completion --------------------------------------------------------------------------
def _actions(verb: Verb[Any]) -> list[argparse.Action]:
    """The verb's declared arguments (argparse keeps them in ``_actions``)."""
    return list(verb.parser()._actions)


def _by_metavar(
    metavar: object, nodes: Iterable[str], procs: Iterable[str], apps: Iterable[str]
) -> Iterable[str]:
    """What a value is completed from, by how the verb names it (a FILE is not completed)."""
    pools: dict[str, Iterable[str]] = {"NAME": nodes, "NODE:PID": procs, "APP": apps}
    return pools.get(str(metavar), ())


def _next_positional(actions: list[argparse.Action], words: list[str]) -> argparse.Action | None:
    """The positional argument the next word would fill, given the words after the verb."""
    valued = {s for a in actions if a.option_strings and a.nargs != 0 for s in a.option_strings}
    positionals = [a for a in actions if not a.option_strings]
    filled, skip = 0, False
    for word in words:
        if skip:
            skip = False
        elif word in valued:
            skip = True
        elif not word.startswith("-"):
            filled += 1
    for action in positionals:
        if action.nargs in ("+", "*", argparse.REMAINDER):
            return action
        if filled == 0:
            return action
        filled -= 1
    return None


def candidates(
    line: str, nodes: Iterable[str], procs: Iterable[str], apps: Iterable[str]
) -> list[str]:
    """What the last word of ``line`` could become, given the cluster's names."""
    words = line.split(" ")
    word, before = words[-1], [w for w in words[:-1] if w]
    pool: Iterable[str] = ()
    if not before:
        pool = [*VERBS, "events", "help", "quit"]
    elif before[0] in VERBS and "--" not in before[1:]:
        actions = _actions(verbs.get(before[0]))
        option = next((a for a in actions if before[-1] in a.option_strings), None)
        nxt = _next_positional(actions, before[1:])
        if option is not None and option.nargs != 0:
            pool = _by_metavar(option.metavar, nodes, procs, apps)
        elif word.startswith("-") or nxt is None:
            remainder = any(a.nargs == argparse.REMAINDER for a in actions)
            pool = [s for a in actions for s in a.option_strings if s.startswith("--")]
            pool += ["--"] if remainder else []
        else:
            pool = _by_metavar(nxt.metavar, nodes, procs, apps)
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
