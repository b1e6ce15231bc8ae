"""`transport.heap`: a process that pushes over SFTP reuses its large buffers.

Each check runs in a fresh interpreter, as glibc's thresholds are the
process's: after the call (or a push, which makes it), three buffers the
size of an SFTP write request, made and freed 200 times in a thread as
paramiko's sender does, fault no page in after the first rounds.  Without
it this glibc faults each of them in again every time (about 32,600 faults).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.sshd import Sshd

pytestmark = pytest.mark.timeout(60)

FAULTS = """
import resource, threading

def rounds():
    def one():
        a = b"a" * (260 * 1024)
        b = a + b"b"
        c = b"c" + b
        del a, b, c
    for _ in range(20):
        one()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        one()
    counted.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

counted = []
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(counted[0])
"""


def _faults(prelude: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", prelude + FAULTS],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[2],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])),
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_after_keep_large_buffers_request_sized_buffers_fault_nothing() -> None:
    prelude = "from corral.transport import heap\nassert heap.keep_large_buffers()\n"
    assert _faults(prelude) < 100  # 200 rounds touch 39,000 pages


def test_a_push_sets_it_for_its_process(sshd: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "small.bin"
    src.write_bytes(os.urandom(4096))
    prelude = (
        "from pathlib import Path\n"
        "from corral.transport import sftp\n"
        f"t = sftp.SshTarget({sshd.host!r}, {sshd.port}, {sshd.user!r}, Path({str(sshd.key)!r}),"
        f" Path({str(sshd.known_hosts)!r}), keep_open=0)\n"
        f"sftp.push(t, [sftp.Upload(Path({str(src)!r}), {str(tmp_path / 'dest.bin')!r}, 0o644)])\n"
    )
    assert _faults(prelude) < 100
    assert (tmp_path / "dest.bin").read_bytes() == src.read_bytes()
