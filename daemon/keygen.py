"""A node's new key and its CSR, made in a child process the worker starts.

    python -m corral.daemon.keygen DIR NAME

writes a fresh EC key to ``DIR/node.key.new`` (0600) and prints, on
stdout, the DER of a certificate signing request over it for node
``NAME``.  Exit 1 with one line on stderr if it cannot.

Why a child: `cryptography`, which makes keys and CSRs, costs a process
about 10 MiB of memory from its import on, and the worker daemon lives for
months at a budget of 40 MiB.  It needs a key twice a certificate's life
(enrollment, renewal), so it pays a child's start-up (a few hundred ms)
then instead; `make` starts it and waits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from corral.transport import tls

TIMEOUT = 30.0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m corral.daemon.keygen DIR NAME", file=sys.stderr)
        return 2
    from corral.transport import keys

    files = tls.NodeFiles(Path(argv[0]))
    try:
        # ROOT/tls only: ROOT is the worker's, made at its start.  A child that
        # outlives its worker (killed while the key was being made) must not
        # make ROOT again after whoever owned it removed it.
        files.dir.mkdir(mode=0o700, exist_ok=True)
        key = keys.new_key()
        tls.write_private(files.pending_key, keys.key_pem(key))
        csr = keys.csr_der(key, argv[1])
    except (OSError, ValueError) as e:
        print(f"cannot make a key in {files.dir}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(csr)
    sys.stdout.buffer.flush()
    return 0


async def make(files: tls.NodeFiles, name: str) -> bytes:
    """Run the child: a new key in ``files.pending_key``, its CSR returned (DER).

    `tls.TlsError` with the child's words if it fails.
    """
    import asyncio  # here: the child itself has no use for it (60 ms of its start)

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corral.daemon.keygen",
        str(files.dir),
        name,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0 or not out:
        why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise tls.TlsError(f"cannot make a key and CSR: {why[0]}")
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
