"""The CLI's pure parts: units, tables, where the master is, parsing, import cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral import client
from corral.__main__ import build_parser, main
from corral.master import verbs
from corral.master.state import default_state_dir
from corral.master.text import cpu_seconds, duration, human_bytes, render
from corral.transport.addresses import split_hostport
from tests.cli.conftest import REPO, base_env


def test_human_bytes_spells_sizes_as_ls_h_does() -> None:
    assert human_bytes(0) == "0B"
    assert human_bytes(900) == "900B"
    assert human_bytes(1023) == "1023B"
    assert human_bytes(1024) == "1.0K"
    assert human_bytes(1536) == "1.5K"
    assert human_bytes(9.96 * 2**10) == "10K"  # not "10.0K"
    assert human_bytes(12.3 * 2**20) == "12M"
    assert human_bytes(1.2 * 2**30) == "1.2G"
    assert human_bytes(300 * 2**20) == "300M"
    assert human_bytes(2**20 - 1) == "1.0M"  # not "1024K"
    assert human_bytes(3 * 2**40) == "3.0T"
    assert human_bytes(None) == "-"
    assert human_bytes(-1) == "-"


def test_host_port() -> None:
    assert split_hostport("10.0.0.1:7070", 1) == ("10.0.0.1", 7070)
    assert split_hostport("[::1]:0", 1) == ("::1", 0)
    assert split_hostport(":9", 1) == ("127.0.0.1", 9)
    assert split_hostport("example", 7071) == ("example", 7071)
    for bad in ("h:x", "h:70000", "h:", "h:²", "h:" + "9" * 5000):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            split_hostport(bad, 1)

    # As the worker reads --master: both parts required, a real port.
    def master(text: str) -> tuple[str, int]:
        return split_hostport(text, None, what="--master", port_zero=False, default_host=None)

    assert master("[fe80::1]:7070") == ("fe80::1", 7070)
    for bad in ("nohost", ":7070", "h:0", "host:70000"):
        with pytest.raises(ValueError, match=f"bad --master {bad!r}: expected HOST:PORT"):
            master(bad)


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


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.master.control import MasterConfig

    monkeypatch.setenv("XDG_STATE_HOME", "/somewhere")
    monkeypatch.delenv("CORRAL_STATE_DIR", raising=False)
    assert client.state_dir(None) == default_state_dir() == Path("/somewhere/corral")
    assert MasterConfig().state_dir == default_state_dir()


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
    for verb in ("master", "worker", "demo", *verbs.NAMES):
        with pytest.raises(SystemExit) as exit_:
            build_parser(verb).parse_args([verb, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert f"corral {verb}" in out.split("Example:")[1], verb


def test_the_overview_lists_every_verb_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in verbs.every():
        assert f"    {verb.name} " in out and verb.summary.split()[0] in out, verb.name


def test_bad_api_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ps", "--api", "localhost:notaport"]) == 2
    err = capsys.readouterr().err
    assert err == "corral: bad API address 'localhost:notaport': expected HOST:PORT\n"
    assert main(["ps", "--api", "localhost:0"]) == 2  # nothing to connect to at port 0


def test_a_huge_tail_is_a_usage_error_not_an_overflow(capsys: pytest.CaptureFixture[str]) -> None:
    for tail in ("99999999999999999999", "2147483648", "9" * 5000, "-1", "ten"):
        assert main(["logs", "n1:1", "--tail", tail, "--api", "127.0.0.1:1"]) == 2, tail
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--tail" in err and "Error" not in err, err


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
