"""The master's cache of local sha256s (`LocalHashes`): one read per file, however
many deploys ask for it at once."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from bench.cluster import wait_until
from corral.master import deployer as deploying

pytestmark = pytest.mark.timeout(30)


def _waiting_on_a_future(thread: threading.Thread) -> bool:
    """Is ``thread`` blocked in a `concurrent.futures.Future.result`?"""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "result" and "concurrent" in code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_a_file_two_threads_ask_for_at_once_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = deploying.LocalHashes()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1 << 20))
    inside, release = threading.Event(), threading.Event()
    reads: list[Path] = []
    real = deploying.deploy.sha256_file

    def held(path: Path) -> str:
        reads.append(path)
        inside.set()
        assert release.wait(10)
        return real(path)

    monkeypatch.setattr(deploying.deploy, "sha256_file", held)
    got: dict[str, str] = {}
    first = threading.Thread(target=lambda: got.__setitem__("first", hashes.sha256(data)))
    first.start()
    try:
        assert inside.wait(10), "the first thread never started hashing"
        second = threading.Thread(target=lambda: got.__setitem__("second", hashes.sha256(data)))
        second.start()
        wait_until(lambda: _waiting_on_a_future(second), 10, "the second to wait on the first")
    finally:
        release.set()
    first.join(10)
    second.join(10)
    want = hashlib.sha256(data.read_bytes()).hexdigest()
    assert got == {"first": want, "second": want}
    assert reads == [data]
    assert hashes.cached(data) == want  # and the next one reads nothing
    assert hashes.sha256(data) == want and reads == [data]


def test_a_hash_that_failed_fails_its_waiters_and_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = deploying.LocalHashes()
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 4096)

    def unreadable(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(deploying.deploy, "sha256_file", unreadable)
    with pytest.raises(PermissionError):
        hashes.sha256(data)
    assert hashes.cached(data) is None
    monkeypatch.undo()
    assert hashes.sha256(data) == hashlib.sha256(b"x" * 4096).hexdigest()
