"""The demo's own sshd: deploys from ``corral demo`` work with nothing set up.

`start` generates a host key and a client key (ECDSA P-256, with paramiko)
in a directory of the demo's temporary dir, writes an sshd_config that
listens on 127.0.0.1 only, on a free port, and accepts that client key for
the user running the demo and nothing else (no passwords), then runs
``sshd -D`` until `DemoSshd.stop`.  The master gets the matching ``[ssh]``
table (`master.config.ssh_table`): user, client key, port, and a
known_hosts file that already trusts the host key.

Without an ``sshd`` binary the demo runs without one, and `missing` says
what to install; the deploy dialog shows it before the form is filled in.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
START_TIMEOUT = 10.0  # seconds sshd gets to greet on its port
STOP_TIMEOUT = 5.0
NO_SSHD = "no sshd on this machine: install openssh-server (deploys copy files over SSH)"


class SshdError(Exception):
    """The demo's sshd could not start; the message is one line."""


def find_sshd() -> str | None:
    """The sshd binary: on PATH, else where distributions put it; None if absent."""
    found = shutil.which("sshd")
    if found:
        return found
    return next((p for p in SSHD_PATHS if os.access(p, os.X_OK)), None)


def missing() -> str:
    """Why the demo cannot run an sshd ("" if it can)."""
    return "" if find_sshd() else NO_SSHD


PR_SET_PDEATHSIG = 1


def _end_with_the_demo() -> None:
    """In the child before exec: SIGTERM when the demo dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keypair(path: Path, comment: str) -> str:
    """A new private key in ``path`` (0600) and ``path.pub``; returns the public line."""
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(path))
    os.chmod(path, 0o600)
    line = f"{key.get_name()} {key.get_base64()} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def _config(d: Path, port: int, user: str) -> Path:
    config = d / "sshd_config"
    config.write_text(
        "# corral demo: a private sshd on loopback, for the demo's deploys only\n"
        "ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AllowUsers {user}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        # The keys live under /tmp, whose mode StrictModes refuses.
        "StrictModes no\n"
        "UseDNS no\n"
        "PermitRootLogin prohibit-password\n"
        "X11Forwarding no\n"
        "AllowTcpForwarding no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 64\n"
        "Subsystem sftp internal-sftp\n"
    )
    return config


@dataclass
class DemoSshd:
    """A running demo sshd and what the master needs to reach it."""

    port: int
    user: str
    key: Path  # the client's private key, the only one sshd accepts
    host_key_line: str  # known_hosts line: "[127.0.0.1]:PORT ecdsa-sha2-nistp256 AAAA..."
    log: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_for_banner(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> None:
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            if s.recv(4).startswith(b"SSH-"):
                return
        try:  # the pause between polls is also the check that sshd still runs
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise SshdError(f"sshd did not answer on port {port} (log: {log})") from None
            continue
        last = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SshdError(f"sshd exited with status {proc.returncode}: {last[0]}")


def start(directory: Path, sshd: str | None = None, timeout: float = START_TIMEOUT) -> DemoSshd:
    """Keys, config and a running ``sshd -D`` under ``directory``; `SshdError` if it fails."""
    binary = sshd or find_sshd()
    if binary is None:
        raise SshdError(NO_SSHD)
    user = getpass.getuser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keypair(directory / "host_key", "corral-demo-host")
    client = _keypair(directory / "client_key", "corral-demo")
    (directory / "authorized_keys").write_text(client + "\n")
    if os.geteuid() == 0:  # sshd's privilege separation directory, as its service makes it
        with contextlib.suppress(OSError):
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    log = directory / "sshd.log"
    port = _free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(_config(directory, port, user))],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it last
            preexec_fn=_end_with_the_demo,  # no sshd outlives a demo that was killed
        )
    try:
        _wait_for_banner(proc, port, log, time.monotonic() + timeout)
    except BaseException:
        DemoSshd(port, user, directory / "client_key", "", log, proc).stop()
        raise
    kind, blob = (directory / "host_key.pub").read_text().split()[:2]
    return DemoSshd(
        port, user, directory / "client_key", f"[127.0.0.1]:{port} {kind} {blob}", log, proc
    )
