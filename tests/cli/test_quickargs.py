"""The command line read without argparse gives what argparse gives, or hands over.

`quickargs` reads a client verb's plain command line so a command does not
load argparse (a third of `corral nodes`).  Wherever it answers, the
answer must be argparse's namespace exactly; wherever argparse would
refuse or print help, it must answer None (argparse then speaks).  These
tests compare the two on every verb's own examples and on generated
command lines made of each verb's flags, abbreviations, `--`, values good
and bad.
"""

from __future__ import annotations

import contextlib
import io
import shlex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.__main__ import build_parser, main, quick_parse
from corral.master import verbs
from corral.master.verbs.base import CommandError
from corral.master.verbs.quickargs import Declared

pytestmark = pytest.mark.timeout(300)

HELP_OR_EXIT = "help or exit"


def by_argparse(argv: list[str]) -> dict[str, object] | str | None:
    """argparse's namespace as a dict; None for a usage error; `HELP_OR_EXIT` for --help."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return vars(build_parser(argv[0]).parse_args(argv))
    except CommandError:
        return None
    except SystemExit:
        return HELP_OR_EXIT


def flags_of(name: str) -> list[str]:
    declared = Declared()
    verbs.get(name).arguments(declared)  # type: ignore[arg-type]
    return [f for a in declared.actions for f in a.flags if f.startswith("-")]


def examples(name: str) -> list[list[str]]:
    lines = []
    for line in verbs.get(name).examples.splitlines():
        words = shlex.split(line.split("|")[0].replace("~", "/home/u"))
        while "=" in words[0]:  # an environment setting before the command
            words.pop(0)
        assert words[:2] == ["corral", name], line
        lines.append(words[1:])
    return lines


@pytest.mark.parametrize("name", verbs.NAMES)
def test_every_example_of_every_verb_is_read_without_argparse_and_as_argparse_reads_it(
    name: str,
) -> None:
    for argv in examples(name):
        quick = quick_parse(argv)
        assert quick is not None, argv  # the plain case takes the quick path
        assert vars(quick) == by_argparse(argv), argv


VALUES = [
    "w1", "n1:4242", "w1:12", "12", "0", "-1", "2G", "10Q", "-", "", "a b", "x=y",
    "revoke", "rotate", "all", "/bin/true", "sleep", "60", "--", "-h", "--help", "--nope",
]  # fmt: skip


def command_lines(name: str) -> st.SearchStrategy[list[str]]:
    flags = ["--api", "--state-dir", *flags_of(name)]
    longs = [f for f in flags if f.startswith("--")]
    words = [*flags, *(f[:4] for f in longs), *(f + "=v" for f in longs)]
    words += [f + "=3" for f in longs]
    word = st.sampled_from(words + VALUES)
    anything = st.lists(word, max_size=7).map(lambda rest: [name, *rest])
    # an example with words put in or taken out: near the plain lines people type
    near = st.tuples(st.sampled_from(examples(name)), st.lists(word, max_size=2), st.integers(0, 9))
    return anything | near.map(lambda t: [*t[0][: len(t[0]) - t[2] % 2], *t[1]])


@pytest.mark.parametrize("name", verbs.NAMES)
def test_a_generated_command_line_is_read_as_argparse_reads_it_or_handed_to_it(name: str) -> None:
    taken: list[int] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(command_lines(name))
    def same(argv: list[str]) -> None:
        quick = quick_parse(argv)
        if quick is not None:
            taken.append(1)
            assert vars(quick) == by_argparse(argv), argv

    same()
    assert taken  # some generated lines did take the quick path


def test_what_quickargs_cannot_read_is_still_an_error_in_argparse_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert quick_parse(["stop", "--wai", "w1:1"]) is None  # an abbreviation: argparse's call
    assert main(["stop", "w1:1", "--timeout", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("corral: argument --timeout: expected above 0"), err
    assert len(err.splitlines()) == 1
    assert main(["launch", "--node", "w1", "--all", "--", "true"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_unsupported_declaration_is_refused_not_misread() -> None:
    d = Declared()
    with pytest.raises(TypeError, match="count"):
        d.add_argument("-v", action="count")
    with pytest.raises(TypeError, match="nargs"):
        d.add_argument("--pair", nargs=2)
    with pytest.raises(TypeError, match="required group"):
        d.add_mutually_exclusive_group(required=True)
    d.add_argument("program", nargs="...")
    with pytest.raises(TypeError, match="after a '\\+' or REMAINDER"):
        d.add_argument("more")
