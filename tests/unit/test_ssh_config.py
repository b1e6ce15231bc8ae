"""``[ssh] stall_timeout`` and ``keep_open``: read, refused when bad, written back."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.master.config import ConfigError, SshConfig, load_ssh, ssh_table


def _load(tmp_path: Path, text: str) -> SshConfig:
    (tmp_path / "config.toml").write_text("[ssh]\n" + text)
    return load_ssh(tmp_path)


def test_stall_timeout_defaults_and_reads(tmp_path: Path) -> None:
    assert _load(tmp_path, "").stall_timeout == 30.0
    assert _load(tmp_path, "stall_timeout = 2\n").stall_timeout == 2.0
    assert _load(tmp_path, "stall_timeout = 0.5\n").stall_timeout == 0.5


def test_keep_open_defaults_and_reads_and_zero_turns_it_off(tmp_path: Path) -> None:
    assert _load(tmp_path, "").keep_open == 60.0
    assert _load(tmp_path, "keep_open = 0\n").keep_open == 0.0
    assert _load(tmp_path, "keep_open = 2.5\n").keep_open == 2.5


STALL = "ssh.stall_timeout: expected seconds, more than 0 and at most 3600"
KEEP = "ssh.keep_open: expected seconds, from 0 (close after each use) to 86400"


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("stall_timeout", v, STALL) for v in ("0", "-1", "3601", '"30"', "true", "nan")]
    + [("keep_open", v, KEEP) for v in ("-1", "86401", '"60s"', "false", "nan")],
)
def test_a_bad_seconds_value_is_one_line(tmp_path: Path, key: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, f"{key} = {value}\n")
    text = str(refused.value)
    assert text.splitlines() == [text]
    assert says in text


def test_the_table_written_reads_back(tmp_path: Path) -> None:
    config = SshConfig("me", tmp_path / "kh", stall_timeout=7.5, keep_open=0.0)
    (tmp_path / "config.toml").write_text(ssh_table(config))
    assert load_ssh(tmp_path) == config
    plain = SshConfig("me", tmp_path / "kh")
    assert "stall_timeout" not in ssh_table(plain)
    assert "keep_open" not in ssh_table(plain)
