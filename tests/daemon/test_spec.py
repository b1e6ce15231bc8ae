"""Launch requests checked and made into specs, before anything is forked."""

from __future__ import annotations

import re

import pytest

from corral.daemon.spec import SpecError, check_command, launch_env, make_spec, new_launch_id
from corral.daemon.store import AppStore


@pytest.mark.parametrize(
    ("argv", "env", "why"),
    [
        ([], {}, "empty command line"),
        ([""], {}, "empty command line"),
        (["a", "b\0"], {}, "command line contains a NUL byte"),
        (["a"], {"": "x"}, "bad environment variable ''"),
        (["a"], {"A=B": "x"}, "bad environment variable 'A=B'"),
        (["a"], {"A": "x\0"}, "bad environment variable 'A'"),
    ],
)
def test_what_exec_cannot_take_is_refused(argv, env, why):
    with pytest.raises(SpecError, match=f"^{re.escape(why)}$"):
        check_command(argv, env)


def test_the_apps_lib_comes_first(monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/daemon/lib")
    assert launch_env("/r/apps/a", {"X": "1"}) == {
        "X": "1",
        "LD_LIBRARY_PATH": "/r/apps/a/lib:/daemon/lib",
    }
    mine = launch_env("/r/apps/a", {"LD_LIBRARY_PATH": "/mine"})
    assert mine["LD_LIBRARY_PATH"] == "/r/apps/a/lib:/mine"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert launch_env("/r/apps/a", {})["LD_LIBRARY_PATH"] == "/r/apps/a/lib"


def test_launch_ids_are_new_sortable_names():
    seen: list[str] = []

    def taken(launch: str) -> bool:
        seen.append(launch)
        return len(seen) < 3  # the first two are in use

    launch = new_launch_id(taken)
    assert launch == seen[-1] and len(set(seen)) == 3
    assert re.fullmatch(r"\d{8}-\d{6}\.\d{3}-[0-9a-f]{4}", launch)


def test_a_spec_names_the_program_and_its_place(store: AppStore):
    bin_dir = store.root / "apps/demo/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "prog").write_bytes(b"#!/bin/sh\nexit 0\n")
    (bin_dir / "prog").chmod(0o755)
    spec = make_spec(store, "demo", ["prog", "x"], {"A": "1"}, "boot", lambda _: False)
    assert (spec.app, spec.argv, spec.boot_id, spec.script) == ("demo", ["prog", "x"], "boot", True)
    assert spec.beneath == ["apps", "demo", "bin", "prog"]
    assert spec.env["A"] == "1"
    assert spec.env["LD_LIBRARY_PATH"].startswith(f"{store.apps_dir}/demo/lib")


@pytest.mark.parametrize(
    ("app", "argv", "why"),
    [
        ("../x", ["true"], "invalid app name '../x'"),
        ("demo", ["nosuch-prog"], "cannot execute 'nosuch-prog': No such file or directory"),
        ("demo", [], "empty command line"),
    ],
)
def test_a_bad_request_is_refused(store: AppStore, app, argv, why):
    with pytest.raises(SpecError, match=f"^{re.escape(why)}$"):
        make_spec(store, app, argv, {}, "boot", lambda _: False)
