"""The CLI's pure parts: units, tables, where the master is, parsing, import cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral import client
from corral.__main__ import CLIENT_VERBS, build_parser, main
from corral.table import cpu_seconds, duration, human_bytes, render
from tests.cli.conftest import REPO, base_env


def test_human_bytes() -> None:
    assert human_bytes(0) == "0B"
    assert human_bytes(900) == "900B"
    assert human_bytes(1536) == "1.5K"
    assert human_bytes(12.3 * 2**20) == "12.3M"
    assert human_bytes(1.2 * 2**30) == "1.2G"
    assert human_bytes(300 * 2**20) == "300M"
    assert human_bytes(None) == "-"


def test_durations() -> None:
    assert duration(0.42) == "0.4s"
    assert duration(12) == "12s"
    assert duration(185) == "3m05s"
    assert duration(3720) == "1h02m"
    assert duration(2 * 86400 + 3 * 3600) == "2d03h"
    assert cpu_seconds(0.123) == "0.12s"
    assert cpu_seconds(45.67) == "45.7s"
    assert cpu_seconds(125) == "2m05s"


def test_render_aligns_columns() -> None:
    text = render(("NAME", "RSS", "CMD"), [("a", "1.2M", "x y"), ("long", "12K", "z")], ["RSS"])
    assert text.splitlines() == [
        "NAME   RSS  CMD",
        "a     1.2M  x y",
        "long   12K  z",
    ]


def test_default_state_dir_matches_the_master(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.master.control import default_state_dir

    monkeypatch.setenv("XDG_STATE_HOME", "/somewhere")
    assert client.default_state_dir() == default_state_dir() == Path("/somewhere/corral")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert client.default_state_dir() == default_state_dir()


def test_finding_the_master(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("CORRAL_API", "CORRAL_TOKEN", "CORRAL_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert client.find_api(None, tmp_path) == "127.0.0.1:7071"
    (tmp_path / "api").write_text("127.0.0.1:5000\n")
    assert client.find_api(None, tmp_path) == "127.0.0.1:5000"
    monkeypatch.setenv("CORRAL_API", "10.0.0.1:6000")
    assert client.find_api(None, tmp_path) == "10.0.0.1:6000"
    assert client.find_api("h:1", tmp_path) == "h:1"

    monkeypatch.setenv("CORRAL_STATE_DIR", str(tmp_path))
    assert client.state_dir(None) == tmp_path
    assert client.state_dir("/x") == Path("/x")
    (tmp_path / "token").write_text("from-file\n")
    assert client.find_token(tmp_path) == "from-file"
    monkeypatch.setenv("CORRAL_TOKEN", "from-env")
    assert client.find_token(tmp_path) == "from-env"


def test_every_verb_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("master", "worker", "demo", *CLIENT_VERBS):
        with pytest.raises(SystemExit) as exit_:
            build_parser(worker_verb=verb == "worker").parse_args([verb, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert f"corral {verb}" in out.split("example:")[1], verb


def test_bad_api_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ps", "--api", "localhost:notaport"]) == 2
    err = capsys.readouterr().err
    assert err == "corral: bad API address 'localhost:notaport': expected HOST:PORT\n"


def test_client_verbs_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from corral.__main__ import main\n"
        "main(['ps', '--api', '127.0.0.1:1'])\n"
        "heavy = ('asyncio', 'textual', 'paramiko', 'msgspec', 'master', 'daemon')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(CORRAL_TOKEN="t"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "[]\n", done.stderr
