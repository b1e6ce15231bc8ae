"""A real OpenSSH sshd on 127.0.0.1 for tests, with its own keys and config.

`start_sshd(tmp_path)` generates a host key and a client key, writes an
sshd_config that only accepts that client key, starts ``sshd -D`` on a free
port and yields an `Sshd` once the port answers with an SSH banner.  Other
test directories reuse it: ``from tests.deploy.sshd import start_sshd``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    """A running test sshd and what a client needs to reach it."""

    host: str
    port: int
    user: str
    key: Path  # client private key, authorized by this sshd
    known_hosts: Path  # a known_hosts file that trusts this sshd's host key
    host_key_line: str  # that file's one line: "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    log: Path  # sshd's stderr

    @property
    def host_id(self) -> str:
        return f"[{self.host}]:{self.port}"


def sshd_available() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "corral-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(d: Path, port: int) -> Path:
    config = d / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {d / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "UseDNS no\n"
        "PermitRootLogin yes\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 50\n"
        "Subsystem sftp internal-sftp\n"
    )
    return config


def _wait_for_banner(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> None:
    """Poll until sshd greets on ``port``; fail at once if it exited."""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not answer on port {port}: {log.read_text()}")
        try:  # the pause between polls doubles as the check that sshd still runs
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()}")


@contextmanager
def start_sshd(tmp_path: Path, start_timeout: float = 15.0) -> Iterator[Sshd]:
    """Run a private sshd for the duration of the ``with`` block."""
    d = tmp_path / "sshd"
    d.mkdir(parents=True, exist_ok=True)
    _keygen(d / "host_ed25519")
    _keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privsep dir
    port = _free_port()
    log = d / "sshd.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(_write_config(d, port))],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        _wait_for_banner(proc, port, log, time.monotonic() + start_timeout)
        kind, blob = (d / "host_ed25519.pub").read_text().split()[:2]
        line = f"[127.0.0.1]:{port} {kind} {blob}"
        known_hosts = d / "known_hosts"
        known_hosts.write_text(line + "\n")
        yield Sshd(
            "127.0.0.1", port, getpass.getuser(), d / "client_ed25519", known_hosts, line, log
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
