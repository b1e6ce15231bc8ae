"""Usage errors from the real command line: one line that says how to write it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(30)


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    # No master anywhere: a usage error is found before one is looked for.
    env = {"PATH": "/usr/bin:/bin", "CORRAL_API": "127.0.0.1:9", "HOME": "/nonexistent"}
    cmd = [sys.executable, "-m", "corral", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20)


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        (["submit", "--mem", "-5M", "--", "true"], "write --mem=-5M"),
        (["worker", "--master", "127.0.0.1:9", "--mem", "-1G"], "write --mem=-1G"),
    ],
)
def test_a_value_that_looks_like_an_option_says_how_to_write_it(args: list[str], fix: str) -> None:
    r = corral(*args)
    assert r.returncode == 2, r
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "expected one argument" in lines[0] and fix in lines[0], r


def test_a_forgotten_value_is_not_told_to_take_the_next_option() -> None:
    r = corral("submit", "--replicas", "--mem", "5M", "--", "true")
    assert r.returncode == 2, r
    assert "argument --replicas: expected one argument (try" in r.stderr, r
    assert "write" not in r.stderr


def test_the_suggested_spelling_is_read_and_judged() -> None:
    r = corral("submit", "--mem=-5M", "--", "true")
    assert r.returncode == 2, r
    assert "bad size '-5M': it must be positive" in r.stderr, r
