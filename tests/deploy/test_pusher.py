"""The multi-process pusher (master/pusher.py) against a real sshd on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from pathlib import Path

import pytest

from corral.master import pusher
from corral.transport.sftp import TMP_MARK, PushError, SshTarget, Upload
from tests.deploy.sshd import Sshd

MiB = 2**20


@pytest.fixture
def target(sshd: Sshd) -> SshTarget:
    return SshTarget(sshd.host, sshd.port, sshd.user, sshd.key, sshd.known_hosts)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_covers_every_byte_once_in_about_equal_parts() -> None:
    files = [("a", "/r/a", 30 * MiB + 5), ("b", "/r/b", 0), ("c", "/r/c", 3 * MiB)]
    for parts in (1, 2, 3, 4):
        slices = pusher.split(files, parts)
        assert 1 <= len(slices) <= parts
        covered: dict[str, list[tuple[int, int]]] = {}
        for s in slices:
            for _, remote, off, n in s:
                covered.setdefault(remote, []).append((off, n))
        for _, remote, size in files:
            ranges = sorted(covered[remote])
            assert ranges[0][0] == 0 and sum(n for _, n in ranges) == size, (parts, remote)
            assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(ranges))
        sizes = [sum(w[3] for w in s) for s in slices]
        assert max(sizes) - min(sizes) <= parts * MiB, sizes  # shares are whole MiB
        assert all(w[2] % MiB == 0 for s in slices for w in s if w[1] == "/r/a")


def test_parts_follow_cores_nodes_and_size() -> None:
    assert pusher.parts_for(1, 200 * MiB, cpus=4) == 4
    assert pusher.parts_for(3, 100 * MiB, cpus=4) == 1
    assert pusher.parts_for(1, 200 * MiB, cpus=32) == pusher.MAX_PARTS
    assert pusher.parts_for(1, 70 * MiB, cpus=64) == 4  # ranges no smaller than PART_MIN
    assert pusher.parts_for(1, 200 * MiB, cpus=2) == 0  # 2 cores: a thread does better
    assert pusher.parts_for(1, 20 * MiB, cpus=64) == 0  # too small to pay a child's start


def test_a_large_push_from_three_processes_arrives_whole(target: SshTarget, tmp_path: Path) -> None:
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(20 * MiB + 12345))
    small = tmp_path / "src" / "tool"
    small.write_bytes(b"#!/bin/sh\necho hi\n")
    dest = tmp_path / "node" / "apps" / "x"
    uploads = [Upload(small, f"{dest}/bin/tool", 0o755), Upload(big, f"{dest}/lib/big.bin", 0o640)]
    seen: list[tuple[int, int]] = []
    report = asyncio.run(pusher.push(target, uploads, lambda d, t: seen.append((d, t)), 3))
    assert sha(dest / "lib" / "big.bin") == sha(big)
    assert (dest / "bin" / "tool").read_bytes() == small.read_bytes()
    assert (dest / "bin" / "tool").stat().st_mode & 0o7777 == 0o755
    assert (dest / "lib" / "big.bin").stat().st_mode & 0o7777 == 0o640
    assert [p for p in dest.rglob("*") if TMP_MARK in p.name] == []
    total = big.stat().st_size + small.stat().st_size
    assert report.bytes == total and seen[-1] == (total, total)


def test_a_failed_range_leaves_no_temporary_and_says_why(target: SshTarget, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(2 * MiB))
    blocker = tmp_path / "node" / "lib" / "data.bin"
    blocker.mkdir(parents=True)  # a directory where the file goes: the rename fails
    with pytest.raises(PushError, match=r"data\.bin"):
        asyncio.run(pusher.push(target, [Upload(src, str(blocker), 0o644)], None, 2))
    assert blocker.is_dir()
    assert [p for p in blocker.parent.iterdir() if TMP_MARK in p.name] == []


def test_an_unknown_host_key_fails_before_any_byte_and_ends_the_children(
    sshd: Sshd, tmp_path: Path
) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    target = SshTarget(sshd.host, sshd.port, sshd.user, sshd.key, known)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(MiB))
    dest = tmp_path / "node" / "data.bin"
    with pytest.raises(PushError, match="unknown host key"):
        asyncio.run(pusher.push(target, [Upload(src, str(dest), 0o644)], None, 2))
    assert not dest.parent.exists()
