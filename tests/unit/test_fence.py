"""The worker's fence: the highest leader term seen, kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.daemon.fence import Fence
from corral.daemon.worker import ConfigError, parse_masters


def test_fence_remembers_the_highest_term(tmp_path: Path) -> None:
    fence = Fence(tmp_path)
    assert fence.highest == 0 and fence.refusal(0) == ""
    fence.see(12)
    fence.see(7)  # an older one never lowers it
    assert fence.highest == 12
    assert fence.refusal(12) == ""
    assert "term 11 is older than term 12" in fence.refusal(11)
    assert Fence(tmp_path).highest == 12  # a restarted worker still knows it
    assert (tmp_path / "term").stat().st_mode & 0o777 == 0o600


def test_fence_with_a_damaged_file_starts_from_none(tmp_path: Path) -> None:
    (tmp_path / "term").write_text("not a number")
    assert Fence(tmp_path).highest == 0


def test_worker_takes_several_masters() -> None:
    assert parse_masters("a:1,b:2, a:1") == (("a", 1), ("b", 2))
    with pytest.raises(ConfigError, match="empty address"):
        parse_masters("a:1,")
    with pytest.raises(ConfigError):
        parse_masters("a:1,b")


def test_a_negative_term_is_refused_once_a_term_was_seen(tmp_path: Path) -> None:
    fence = Fence(tmp_path)
    fence.see(3)
    assert "term -1 is older than term 3" in fence.refusal(-1)
