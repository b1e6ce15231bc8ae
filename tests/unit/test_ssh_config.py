"""``[ssh] stall_timeout``: read, refused when bad, written back, and handed to the transfer."""

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


@pytest.mark.parametrize("value", ["0", "-1", "3601", '"30"', "true", "nan"])
def test_a_bad_stall_timeout_is_one_line(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, f"stall_timeout = {value}\n")
    text = str(refused.value)
    assert text.splitlines() == [text]
    assert "ssh.stall_timeout: expected seconds, more than 0 and at most 3600" in text


def test_the_table_written_reads_back(tmp_path: Path) -> None:
    config = SshConfig("me", tmp_path / "kh", stall_timeout=7.5)
    (tmp_path / "config.toml").write_text(ssh_table(config))
    assert load_ssh(tmp_path) == config
    plain = SshConfig("me", tmp_path / "kh")
    assert "stall_timeout" not in ssh_table(plain)
