"""A real OpenSSH sshd for tests, with its own keys and config.

`start_sshd(tmp_path)` generates a host key and a client key, writes an
sshd_config that only accepts that client key, starts ``sshd -D`` on a free
port of 127.0.0.1 and yields an `Sshd` once the port answers with an SSH
banner.  Other test directories reuse it: ``from tests.deploy.sshd import
start_sshd``.  On a separate host (a network namespace), ``address`` and
``port`` say where it listens and ``wrap`` how a command runs there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

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
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


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


def _write_config(d: Path, address: str, port: int) -> Path:
    config = d / "sshd_config"
    config.write_text(
        f"ListenAddress {address}\n"
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


def _greets(address: str, port: int) -> bool:
    """Whether an SSH banner comes from ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _greets_there(wrap: Callable[[list[str]], list[str]], address: str, port: int) -> bool:
    """`_greets`, asked from where ``wrap`` runs a command (another host)."""
    probe = "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
    probe += "; sys.exit(not s.recv(4).startswith(b'SSH-'))"
    argv = wrap([sys.executable, "-c", probe, address, str(port)])
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def _wait_for_banner(
    proc: subprocess.Popen[bytes], greets: Callable[[], bool], port: int, log: Path, deadline: float
) -> None:
    """Poll until sshd greets on ``port``; fail at once if it exited."""
    while not greets():
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not answer on port {port}: {log.read_text()}")
        try:  # the pause between polls doubles as the check that sshd still runs
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()}")


@contextmanager
def start_sshd(
    tmp_path: Path,
    start_timeout: float = 15.0,
    address: str = "127.0.0.1",
    port: int = 0,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> Iterator[Sshd]:
    """Run a private sshd for the duration of the ``with`` block.

    It listens on ``address``:``port`` (0: a free port of 127.0.0.1);
    ``wrap`` turns a command into one run on the host it listens on.
    """
    d = tmp_path / "sshd"
    d.mkdir(parents=True, exist_ok=True)
    _keygen(d / "host_ed25519")
    _keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privsep dir
    port = port or _free_port()
    log = d / "sshd.log"
    argv = [SSHD, "-D", "-e", "-f", str(_write_config(d, address, port))]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            wrap(argv) if wrap else argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        if wrap is None:
            greets = functools.partial(_greets, address, port)
        else:
            greets = functools.partial(_greets_there, wrap, address, port)
        _wait_for_banner(proc, greets, port, log, time.monotonic() + start_timeout)
        kind, blob = (d / "host_ed25519.pub").read_text().split()[:2]
        client_key, known_hosts = d / "client_ed25519", d / "known_hosts"
        sshd = Sshd(address, port, getpass.getuser(), client_key, known_hosts, "", log)
        line = f"{sshd.host_id} {kind} {blob}"
        known_hosts.write_text(line + "\n")
        yield dataclasses.replace(sshd, host_key_line=line)
    finally:
        # Its sessions too: one whose client was cut off silently (a test's
        # netns cut) would otherwise outlive the listener, waiting on TCP.
        sessions = _sessions(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for session in sessions:
            with contextlib.suppress(psutil.Error):
                session.kill()


def _sessions(pid: int) -> list[psutil.Process]:
    """The processes an sshd started for its connections (its descendants)."""
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return children
