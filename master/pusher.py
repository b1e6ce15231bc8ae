"""A large push from several processes: one Python packet loop is not the ceiling.

paramiko encrypts and frames every SSH packet in Python, so one process
moves at most what one core does, whatever the link; a deploy of 50 MiB to
three nodes from one master process was bound there.  `push` here splits a
node's bytes into ranges and has child processes (``python -m
corral.master.pusher``), each with its own SSH connection, write them into
the same temporary files, while the master's thread keeps the control
steps of `corral.transport.sftp`: make the directories, create each file
under its hidden temporary name, then give it its mode and rename it into
place once every range has arrived.  A failure anywhere removes the
temporary files: a file is whole under its name, or absent.

The deployer uses it (`parts_for`) for a node that needs at least
`PROCESS_MIN` bytes on a machine of at least `MIN_CPUS` cores; otherwise
the push stays in a thread.  A child costs about 0.4 s of CPU before its
first byte (Python, paramiko and cryptography imported, a handshake): on a
2-core machine that also runs the nodes' sshd (the bench's loopback
cluster), 100 MiB to one node took 2.0 s this way against 1.1-1.4 s in a
thread, at the same bytes per CPU second once running.

Child protocol, one line each, over its stdin and stdout: the parent
sends the job as JSON (``{"target": {...}, "writes": [[local, remote,
offset, length], ...]}``) once the files exist; the child answers a line
of bytes written (decimal) every write request, then ``done``, or
``error: WHY`` and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from corral.transport import sftp

MiB = 2**20
PROCESS_MIN = 64 * MiB  # a node's push below this stays in one thread
MIN_CPUS = 4  # fewer cores: threads (a child's start-up costs more than it frees)
PART_MIN = 8 * MiB  # no range is cut smaller than this
MAX_PARTS = 4  # child processes per node at most
ALIGN = MiB  # ranges start on these boundaries

Write = tuple[str, str, int, int]  # local path, remote (temporary) path, offset, length


def parts_for(nodes: int, total: int, cpus: int | None = None) -> int:
    """Child processes for one node's push of ``total`` bytes, ``nodes`` pushing at
    once; 0 when a thread does better (too few bytes or too few cores)."""
    cpus = cpus or os.cpu_count() or 1
    if total < PROCESS_MIN or cpus < MIN_CPUS:
        return 0
    by_cpu = max(1, cpus // max(1, nodes))
    by_size = max(1, total // PART_MIN)
    return max(1, min(MAX_PARTS, by_cpu, by_size))


def split(files: Sequence[tuple[str, str, int]], parts: int) -> list[list[Write]]:
    """``(local, remote, size)`` files cut into ``parts`` lists of ranges of about equal bytes."""
    total = sum(size for _, _, size in files)
    share = -(-total // parts) if parts else total
    share = -(-share // ALIGN) * ALIGN  # whole MiB, so no range starts mid-request
    out: list[list[Write]] = [[] for _ in range(max(1, parts))]
    part, room = 0, share
    for local, remote, size in files:
        offset = 0
        while offset < size or (size == 0 and offset == 0):
            n = min(size - offset, room)
            out[part].append((local, remote, offset, n))
            offset += n
            room -= n
            if room == 0 and part < len(out) - 1:
                part, room = part + 1, share
            if size == 0:
                break
    return [p for p in out if p]


def _target_json(t: sftp.SshTarget) -> dict[str, object]:
    return {
        "host": t.host,
        "port": t.port,
        "user": t.user,
        "key_filename": str(t.key_filename) if t.key_filename else None,
        "known_hosts": str(t.known_hosts),
        "timeout": t.timeout,
        "stall": t.stall,
    }


class _Child:
    """One child process writing its ranges; its progress read on the loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.error = ""

    @classmethod
    async def start(cls) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "corral.master.pusher",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def run(self, job: Mapping[str, object], add: Callable[[int], None]) -> bool:
        """Send the job, count its progress; True when it wrote everything."""
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()
        ok = False
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").strip()
            if text.isdigit():
                add(int(text))
            elif text == "done":
                ok = True
            elif text.startswith("error: "):
                self.error = text.removeprefix("error: ")
        status = await self.proc.wait()
        if not ok and not self.error:
            tail = (await self.proc.stderr.read()).decode(errors="replace").strip().splitlines()
            self.error = tail[-1] if tail else f"push process ended with status {status}"
        return ok and status == 0

    def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


async def push(
    target: sftp.SshTarget,
    uploads: list[sftp.Upload],
    progress: Callable[[int, int], None] | None,
    parts: int,
) -> sftp.PushReport:
    """`sftp.push` of ``uploads`` to one node, its bytes written by ``parts`` child processes.

    ``progress(done, total)`` is called on the loop as children report.
    The control steps block in the loop's default executor.
    """
    start = time.monotonic()
    loop = asyncio.get_running_loop()
    sizes = [u.local.stat().st_size for u in uploads]
    total = sum(sizes)
    children = [await _Child.start() for _ in range(max(1, parts))]  # they import meanwhile
    control: sftp.Control | None = None
    done = 0

    def add(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    try:
        control = await loop.run_in_executor(None, sftp.Control.open, target, uploads)
        tmps = control.tmps
        files = [(str(u.local), tmp, n) for u, tmp, n in zip(uploads, tmps, sizes, strict=True)]
        slices = split(files, len(children))
        for extra in children[len(slices) :]:
            extra.stop()
        busy = children[: len(slices)]
        jobs = [{"target": _target_json(target), "writes": s} for s in slices]
        oks = await asyncio.gather(*(c.run(j, add) for c, j in zip(busy, jobs, strict=True)))
        if not all(oks):
            why = next(c.error for c, ok in zip(busy, oks, strict=True) if not ok)
            raise sftp.PushError(f"{target.host}: sending failed: {why}")
        sent = await loop.run_in_executor(None, control.finish, time.monotonic() - start)
    finally:
        for c in children:
            c.stop()
        await asyncio.gather(*(c.proc.wait() for c in children))  # reaped, pipes closed
        if control is not None:
            await loop.run_in_executor(None, control.close)
    return sftp.PushReport(target.host, sent, time.monotonic() - start)


# --- the child ------------------------------------------------------------------------
def _child() -> int:
    job = json.loads(sys.stdin.readline())
    t = job["target"]
    target = sftp.SshTarget(
        host=t["host"],
        port=int(t["port"]),
        user=t["user"],
        key_filename=Path(t["key_filename"]) if t["key_filename"] else None,
        known_hosts=Path(t["known_hosts"]),
        timeout=float(t["timeout"]),
        stall=float(t["stall"]),
        keep_open=0.0,  # a one-shot process: nothing after it to reuse a connection
    )
    writes = [(Path(local), remote, int(off), int(n)) for local, remote, off, n in job["writes"]]

    def report(n: int) -> None:
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()

    try:
        sftp.write_ranges(target, writes, report)
    except (sftp.PushError, OSError) as e:
        print("error: " + " ".join(str(e).split()), flush=True)
        return 1
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
