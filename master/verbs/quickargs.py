"""A client verb's command line read without argparse, when it is plainly well formed.

argparse, with the ``re``, ``gettext``, ``enum`` and ``functools`` it
imports, is about 13 ms of a ``corral`` command's start on the 2-core
machines here: a third of ``corral nodes``.  The verbs declare their
arguments once, for argparse (`Verb.declare`); `Declared` records those
same calls and `Declared.parse` reads a command line with them, for the
cases with one plain meaning: each option named in full, each value where
it belongs.  Anything else returns None and the caller hands the command
line to argparse, which stays the authority: ``--help``, an abbreviated
or unknown option, a missing or extra argument, a bad value, a conflict,
``--opt=VALUE`` on a flag.  So an error reads as argparse words it, and
a command line this module reads gives exactly the namespace argparse
would (a property test compares the two on generated command lines).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

REMAINDER = "..."  # argparse.REMAINDER: every argument from here on, as given
_NOT_GIVEN = object()


class Namespace:
    """argparse's Namespace as far as the verbs use it: attributes, ``vars``, equality."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __eq__(self, other: object) -> bool:
        return vars(self) == vars(other) if hasattr(other, "__dict__") else NotImplemented

    def __repr__(self) -> str:
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class _Action:
    """One ``add_argument`` call, as far as a plain command line needs it."""

    __slots__ = ("choices", "default", "dest", "flags", "kind", "nargs", "required", "type")

    def __init__(self, flags: tuple[str, ...], kw: dict[str, Any]) -> None:
        self.flags = flags
        self.kind: str = kw.get("action", "store")
        self.nargs = kw.get("nargs")
        self.type: Callable[[str], Any] | None = kw.get("type")
        self.choices = kw.get("choices")
        self.required: bool = kw.get("required", False)
        if flags[0].startswith("-"):
            longs = [f for f in flags if f.startswith("--")] or list(flags)
            dest = longs[0].lstrip("-").replace("-", "_")
        else:
            dest = flags[0]
        self.dest: str = kw.get("dest", dest)
        self.default = kw.get("default", False if self.kind == "store_true" else None)

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    def value(self, text: str, choose: bool = True) -> Any:
        """``text`` through the action's type and choices; `_NOT_GIVEN` if argparse would refuse."""
        if self.type is None:
            value: Any = text
        else:
            try:
                value = self.type(text)
            except Exception:  # argparse words the error: let it
                return _NOT_GIVEN
        if choose and self.choices is not None and value not in self.choices:
            return _NOT_GIVEN
        return value


class Declared:
    """Records ``add_argument`` and its groups as argparse would take them; parses plain lines.

    Supports what the verbs declare: flags (``store_true``), options with a
    value (``store``, ``append``), mutually exclusive groups, argument
    groups, and positionals of one value, ``+`` (last) or `REMAINDER`
    (last).  A declaration outside that raises ``TypeError``: a verb that
    needs more must teach this module first (the tests declare every verb).
    """

    def __init__(
        self,
        actions: list[_Action] | None = None,
        groups: list[list[_Action]] | None = None,
        group: list[_Action] | None = None,
    ) -> None:
        self.actions: list[_Action] = [] if actions is None else actions
        self.groups: list[list[_Action]] = [] if groups is None else groups  # exclusive ones
        self._group = group  # where this recorder is an exclusive group: its members

    def add_argument(self, *flags: str, **kw: Any) -> None:
        action = _Action(flags, kw)
        if action.kind not in ("store", "store_true", "append"):
            raise TypeError(f"quickargs: action {action.kind!r} is not supported")
        if action.nargs not in (None, "+", REMAINDER) or (
            action.nargs is not None and not action.positional
        ):
            raise TypeError(f"quickargs: nargs {action.nargs!r} on {flags} is not supported")
        if action.positional and any(a.positional and a.nargs for a in self.actions):
            raise TypeError(f"quickargs: positional {flags[0]!r} after a '+' or REMAINDER one")
        self.actions.append(action)
        if self._group is not None:
            self._group.append(action)

    def add_argument_group(self, *args: Any, **kw: Any) -> Declared:
        return Declared(self.actions, self.groups)

    def add_mutually_exclusive_group(self, required: bool = False) -> Declared:
        if required:
            raise TypeError("quickargs: a required group is not supported")
        members: list[_Action] = []
        self.groups.append(members)
        return Declared(self.actions, self.groups, members)

    # --- reading a command line ------------------------------------------------
    def parse(self, argv: Sequence[str], **fixed: Any) -> Namespace | None:
        """The namespace argparse would make of ``argv``, or None where it is not plain.

        ``fixed`` are further attributes (the subcommand's ``verb``).
        """
        options = {flag: a for a in self.actions if not a.positional for flag in a.flags}
        positionals = [a for a in self.actions if a.positional]
        rivals = {id(a): g for g in self.groups for a in g}
        values: dict[str, Any] = {}
        seen: set[int] = set()
        at = 0  # the next positional to fill
        i = 0
        while i < len(argv):
            token = argv[i]
            opens_remainder = (
                token == "--" and at < len(positionals) and positionals[at].nargs == REMAINDER
            )
            if _looks_like_option(token) and not opens_remainder:
                action = _option(token, options)
                if action is None:
                    return None
                rival = rivals.get(id(action), ())
                if any(id(r) in seen for r in rival if r is not action):
                    return None  # argparse: "not allowed with argument"
                seen.add(id(action))
                _, eq, explicit = token.partition("=")
                if action.kind == "store_true":
                    if eq:
                        return None
                    values[action.dest] = True
                    i += 1
                    continue
                if eq:
                    text = explicit
                    i += 1
                elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    text = argv[i + 1]
                    i += 2
                else:
                    return None  # argparse: "expected one argument" (or a value it reads)
                value = action.value(text)
                if value is _NOT_GIVEN:
                    return None
                if action.kind == "append":
                    values[action.dest] = [*values.get(action.dest, action.default or []), value]
                else:
                    values[action.dest] = value
                continue
            if at >= len(positionals):
                return None  # argparse: "unrecognized arguments"
            action = positionals[at]
            at += 1
            if action.nargs == REMAINDER:
                run = list(argv[i:])
                # argparse sorts every argument before a `--` into option or not
                # first, and refuses an unknown or ambiguous option even here.
                ahead = run[: run.index("--")] if "--" in run else run
                if any(_looks_like_option(t) and _option(t, options) is None for t in ahead):
                    return None
            elif action.nargs is None:
                run = [token]
            else:  # "+": the whole run of plain arguments
                end = i
                while end < len(argv) and not _looks_like_option(argv[end]):
                    end += 1
                run = list(argv[i:end])
            converted = [action.value(t) for t in run]
            if any(v is _NOT_GIVEN for v in converted):
                return None
            values[action.dest] = converted[0] if action.nargs is None else converted
            i += len(run)
        for action in positionals[at:]:
            if action.nargs != REMAINDER:
                return None  # argparse: "the following arguments are required"
            values[action.dest] = []
        for action in self.actions:
            if action.dest in values:
                continue
            if action.required:
                return None
            default = action.default
            if isinstance(default, str) and action.type is not None:
                default = action.value(default, choose=False)  # argparse converts a string default
                if default is _NOT_GIVEN:
                    return None
            values[action.dest] = default
        return Namespace(**fixed, **values)


def _looks_like_option(token: str) -> bool:
    return token.startswith("-") and token != "-"


def _option(token: str, options: dict[str, _Action]) -> _Action | None:
    """The option ``token`` names in full (``--opt`` or ``--opt=VALUE``), else None."""
    name, eq, _ = token.partition("=")
    return options.get(name if eq and name.startswith("--") else token)
