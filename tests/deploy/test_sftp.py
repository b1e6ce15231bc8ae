"""The SFTP pusher against a real sshd on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from corral.transport.sftp import TMP_MARK, HostKeyError, PushError, SshTarget, Upload, push
from tests.deploy.sshd import Sshd


@pytest.fixture
def target(sshd: Sshd) -> SshTarget:
    return SshTarget(sshd.host, sshd.port, sshd.user, sshd.key, sshd.known_hosts)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TMP_MARK in p.name]


def make_file(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def ssh_fingerprint(known_hosts_line: str, tmp_path: Path) -> str:
    """OpenSSH's own SHA256 fingerprint of a known_hosts line."""
    f = tmp_path / "fp_known_hosts"
    f.write_text(known_hosts_line + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(f)], capture_output=True, text=True)
    return out.stdout.split()[1]


def test_files_arrive_with_bytes_and_modes_and_no_temp_names(
    target: SshTarget, tmp_path: Path
) -> None:
    exe = make_file(tmp_path / "src" / "hello", b"\x7fELF program" * 1000, 0o755)
    lib = make_file(tmp_path / "src" / "libgreet.so", os.urandom(3 * 1024 * 1024 + 17), 0o644)
    empty = make_file(tmp_path / "src" / "empty", b"", 0o600)
    dest = tmp_path / "node" / "apps" / "demo"  # does not exist yet
    files = [
        Upload(exe, f"{dest}/bin/hello", 0o755),
        Upload(lib, f"{dest}/lib/libgreet.so", 0o644),
        Upload(empty, f"{dest}/lib/deep/er/empty", 0o600),
    ]
    seen: list[tuple[int, int]] = []
    report = push(target, files, lambda done, total: seen.append((done, total)))
    for upload in files:
        arrived = Path(upload.remote)
        assert arrived.read_bytes() == upload.local.read_bytes()
        assert arrived.stat().st_mode & 0o7777 == upload.mode
    assert leftovers(dest) == []
    total = sum(u.local.stat().st_size for u in files)
    assert report.bytes == total
    assert [s.remote for s in report.files] == [u.remote for u in files]
    assert all(s.seconds >= 0 for s in report.files)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_file_is_replaced_by_rename_never_rewritten_in_place(
    target: SshTarget, tmp_path: Path
) -> None:
    remote = tmp_path / "node" / "bin" / "app"
    push(target, [Upload(make_file(tmp_path / "v1", b"one", 0o755), str(remote), 0o755)])
    kept = remote.open("rb")  # a running program keeps the old inode
    try:
        push(target, [Upload(make_file(tmp_path / "v2", b"two!", 0o755), str(remote), 0o755)])
        assert remote.read_bytes() == b"two!"
        assert kept.read() == b"one"
    finally:
        kept.close()
    assert leftovers(remote.parent) == []


def test_a_failed_file_leaves_no_temporary_and_is_reported(
    target: SshTarget, tmp_path: Path
) -> None:
    blocker = tmp_path / "node" / "lib" / "libx.so"
    blocker.mkdir(parents=True)  # a directory where the file should go: rename fails
    src = make_file(tmp_path / "libx.so", b"data", 0o644)
    with pytest.raises(PushError, match=r"sending .*libx\.so failed"):
        push(target, [Upload(src, str(blocker), 0o644)])
    assert blocker.is_dir()
    assert leftovers(blocker.parent) == []


def test_unknown_host_key_is_refused_with_how_to_trust_it(
    sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # no such file yet
    remote = tmp_path / "node" / "f"
    src = make_file(tmp_path / "f", b"x", 0o644)
    with pytest.raises(HostKeyError) as info:
        push(replace(target, known_hosts=known), [Upload(src, str(remote), 0o644)])
    fp = ssh_fingerprint(sshd.host_key_line, tmp_path)
    assert str(info.value) == (
        f"unknown host key for [127.0.0.1]:{sshd.port} (ssh-ed25519 {fp}); "
        "rerun with --trust-host-key to record it"
    )
    assert not known.exists()
    assert not remote.exists()


def test_trusting_records_the_key_and_it_is_then_known(
    sshd: Sshd, target: SshTarget, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    src = make_file(tmp_path / "f", b"x", 0o644)
    push(replace(target, known_hosts=known, trust_unknown=True), [Upload(src, f"{src}.1", 0o644)])
    assert known.read_text() == sshd.host_key_line + "\n"
    assert known.stat().st_mode & 0o777 == 0o600
    push(replace(target, known_hosts=known), [Upload(src, f"{src}.2", 0o644)])
    assert Path(f"{src}.2").read_bytes() == b"x"
    assert known.read_text() == sshd.host_key_line + "\n"  # recorded once


@pytest.mark.parametrize("hashed", [False, True])
def test_changed_host_key_is_refused_even_when_trusting(
    sshd: Sshd, target: SshTarget, tmp_path: Path, hashed: bool
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True,
    )
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"otherhost {kind} {blob}\n{sshd.host_id} {kind} {blob}\n")
    if hashed:
        subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True)
    before = known.read_text()
    src = make_file(tmp_path / "f", b"x", 0o644)
    for trust in (False, True):
        with pytest.raises(HostKeyError) as info:
            push(
                replace(target, known_hosts=known, trust_unknown=trust),
                [Upload(src, f"{src}.out", 0o644)],
            )
        message = str(info.value)
        assert f"host key for {sshd.host_id} has CHANGED" in message
        assert f"remove line {known}:2 " in message
    assert known.read_text() == before
    assert not Path(f"{src}.out").exists()


def test_wrong_client_key_is_an_authentication_error(target: SshTarget, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
        check=True,
    )
    src = make_file(tmp_path / "f", b"x", 0o644)
    with pytest.raises(PushError, match="ssh authentication failed for"):
        push(replace(target, key_filename=tmp_path / "stranger"), [Upload(src, f"{src}.o", 0o644)])


def test_unreachable_sshd_is_one_clear_error(target: SshTarget, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # bound, never listening: connections are refused
        src = make_file(tmp_path / "f", b"x", 0o644)
        with pytest.raises(PushError) as refused:
            push(replace(target, port=closed_port), [Upload(src, f"{src}.o", 0o644)])
    where = f"{target.user}@127.0.0.1:{closed_port}"
    assert str(refused.value) == f"cannot reach sshd at {where}: connection refused"


def test_nodes_in_parallel_one_client_per_thread(target: SshTarget, tmp_path: Path) -> None:
    srcs = [make_file(tmp_path / f"src{i}", os.urandom(512 * 1024 + i), 0o644) for i in range(6)]
    with ThreadPoolExecutor(max_workers=len(srcs)) as pool:
        reports = list(
            pool.map(
                lambda i: push(target, [Upload(srcs[i], str(tmp_path / f"node{i}" / "f"), 0o640)]),
                range(len(srcs)),
            )
        )
    for i, report in enumerate(reports):
        assert (tmp_path / f"node{i}" / "f").read_bytes() == srcs[i].read_bytes()
        assert report.bytes == 512 * 1024 + i


def test_nothing_to_send_does_not_connect(target: SshTarget) -> None:
    report = push(replace(target, host="192.0.2.1", timeout=0.1), [])  # TEST-NET: unroutable
    assert (report.files, report.bytes) == ([], 0)


def test_remote_paths_must_be_absolute(target: SshTarget, tmp_path: Path) -> None:
    src = make_file(tmp_path / "f", b"x", 0o644)
    with pytest.raises(PushError, match="must be absolute"):
        push(target, [Upload(src, "apps/demo/bin/f", 0o644)])


def test_a_remote_dir_that_cannot_be_made_is_a_push_error(
    target: SshTarget, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "f", b"x", 0o644)
    (tmp_path / "plainfile").write_text("")
    with pytest.raises(PushError, match="plainfile"):
        push(target, [Upload(src, f"{tmp_path}/plainfile/sub/f", 0o644)])
