"""OpenSSH over an already open connection (ControlMaster): the operator's fastest ssh.

`control_master(sshd, dir)` opens one master connection to a test sshd and
yields the ``ssh`` argv prefix that rides it (``... HOST``), so a command
costs the client's start-up and one channel, no handshake.  `rsync_e` is
the same as rsync's ``-e``.  The master is closed (``-O exit``) on leaving.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _options(sshd: Any, socket_path: Path) -> list[str]:
    return [
        "-i",
        str(sshd.key),
        "-p",
        str(sshd.port),
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"ControlPath={socket_path}",
    ]


@contextlib.contextmanager
def control_master(sshd: Any, directory: Path) -> Iterator[list[str]]:
    """The argv prefix (``ssh OPTIONS USER@HOST``) of commands over one open connection."""
    socket_path = directory / "ctl"  # short: a unix socket path has ~100 bytes
    opts = _options(sshd, socket_path)
    where = f"{sshd.user}@{sshd.host}"
    subprocess.run(
        ["ssh", *opts, "-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-fN", where],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield ["ssh", *opts, "-o", "ControlMaster=no", where]
    finally:
        subprocess.run(["ssh", *opts, "-O", "exit", where], capture_output=True, timeout=30)


def rsync_e(prefix: list[str]) -> tuple[str, str]:
    """``(-e COMMAND, USER@HOST)`` for rsync from a `control_master` prefix."""
    return " ".join(prefix[:-1]), prefix[-1]
