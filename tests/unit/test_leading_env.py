"""The dialogs' command line: leading NAME=VALUE words set variables, as in a shell."""

from __future__ import annotations

import pytest

from corral.master.verbs.base import MAX_ENV, UsageError, leading_env


@pytest.mark.parametrize(
    ("words", "env", "argv"),
    [
        (["sleep", "60"], {}, ["sleep", "60"]),
        (["A=1", "B=x=y", "prog", "C=2"], {"A": "1", "B": "x=y"}, ["prog", "C=2"]),
        (["EMPTY=", "prog"], {"EMPTY": ""}, ["prog"]),
        (["A=1", "A=2", "prog"], {"A": "2"}, ["prog"]),  # the last one wins, as in a shell
        (["9X=1", "prog"], {}, ["9X=1", "prog"]),  # not a name: the command itself
        (["--opt=1", "prog"], {}, ["--opt=1", "prog"]),
        (["=1", "prog"], {}, ["=1", "prog"]),
        (["A=1"], {"A": "1"}, []),  # no command: the dialog says so
    ],
)
def test_assignments_before_the_command_are_split_off(
    words: list[str], env: dict[str, str], argv: list[str]
) -> None:
    assert leading_env(words) == (env, argv)


def test_too_many_variables_is_one_line() -> None:
    words = [f"V{i}=1" for i in range(MAX_ENV + 1)] + ["prog"]
    with pytest.raises(UsageError, match=f"at most {MAX_ENV}"):
        leading_env(words)
