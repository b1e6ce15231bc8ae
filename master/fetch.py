"""``fetch``: bring a job's results home, over SFTP, into ``DIR/ID/INDEX-NODE/``.

For each replica that has started, the master asks its worker which files
of the replica's working directory match the job's ``--output`` patterns
(`JobFiles`: regular files reached without a symlink), then copies those
and the replica's log (``LAUNCH.log``) over SFTP, with the SSH settings and
host-key rules of deploy, one SSH connection per node, nodes at once.
It works while the job runs (what exists so far) and after it ended.
With ``purge``, each ended replica whose files all came home has its
working directory removed on its node (`Jobs.purge`); one still running,
or with a file that did not come, keeps it.

Nothing a worker says can place a file outside the replica's directory:
every path it lists is checked (relative, no ``..``, no empty part) before
it is joined to the local one.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from corral.master.config import SshConfig
from corral.master.errors import VerbError
from corral.master.ssh import target as ssh_target
from corral.master.ssh import thread_progress
from corral.master.tickets import Job, Replica
from corral.transport import sftp
from corral.transport.connection import CallError
from corral.transport.messages import JobFiles, JobFilesReply

if TYPE_CHECKING:
    from corral.master.control import Master

MAX_PARALLEL = 16  # SSH connections at once
PROGRESS_INTERVAL = 0.1  # seconds between progress calls per node (plus the last)

# progress(node, bytes_done, bytes_total), on the event loop
FetchProgress = Callable[[str, int, int], None]


class ReplicaFetch(msgspec.Struct, frozen=True):
    """One replica's part: where its files went, and what failed."""

    index: int
    node: str
    dir: str = ""
    files: list[str] = []  # fetched, relative to ``dir``
    bytes: int = 0
    errors: list[str] = []
    purged: bool = False  # --purge: its working directory was removed on the node
    kept: str = ""  # --purge: why its working directory was kept


class FetchResult(msgspec.Struct, frozen=True):
    job: int
    dir: str  # DIR/ID
    replicas: list[ReplicaFetch]
    seconds: float

    @property
    def failed(self) -> bool:
        return any(r.errors for r in self.replicas)


def safe_relative(path: str) -> bool:
    """A path a worker listed that may be joined to a local directory."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def local_dir(to: str | Path, job: int) -> Path:
    """``DIR/ID``, checked (it is made as files arrive); VerbError if it cannot be one."""
    base = Path(to).expanduser().absolute()
    dest = base / str(job)
    for p in (base, dest):
        if p.exists() and not p.is_dir():
            raise VerbError(f"cannot fetch into {p}: it is a file, not a directory")
    for p in base.parents:  # the nearest existing ancestor must be a directory we may write
        if p.exists():
            if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
                raise VerbError(f"cannot fetch into {base}: {p} is not a writable directory")
            break
    return dest


class Fetch:
    """One fetch of one job in flight."""

    def __init__(
        self,
        master: Master,
        ssh: SshConfig,
        job: Job,
        dest: Path,
        progress: FetchProgress | None,
        purge: bool = False,
    ) -> None:
        self.purge = purge
        self.master = master
        self.ssh = ssh
        self.job = job
        self.dest = dest
        self.progress = progress

    async def run(self) -> FetchResult:
        t0 = time.monotonic()
        started = [r for r in self.job.replicas if r.node and r.launch]
        if not started:
            raise VerbError(f"job {self.job.id} has no replica that started: nothing to fetch")
        by_node: dict[str, list[Replica]] = {}
        for rep in started:
            by_node.setdefault(rep.node, []).append(rep)
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(by_node))) as pool:
            parts = await asyncio.gather(
                *(self._node(name, reps, pool) for name, reps in by_node.items())
            )
        results = sorted((r for part in parts for r in part), key=lambda r: r.index)
        if self.purge:
            results = await self._purge(results)
        return FetchResult(self.job.id, str(self.dest), results, time.monotonic() - t0)

    async def _purge(self, results: list[ReplicaFetch]) -> list[ReplicaFetch]:
        """Remove the working directories of the replicas whose files all came home."""
        by_index = {r.index: r for r in self.job.replicas}
        safe = [by_index[r.index] for r in results if not r.errors and r.files]
        done = await self.master.jobs.purge(self.job, safe) if safe else {}
        out = []
        for r in results:
            if r.index not in done:
                why = "not everything was fetched" if r.errors or not r.files else "not purged"
                out.append(msgspec.structs.replace(r, kept=why))
            elif done[r.index]:
                out.append(msgspec.structs.replace(r, kept=done[r.index]))
            else:
                out.append(msgspec.structs.replace(r, purged=True))
        return out

    async def _node(
        self, name: str, reps: list[Replica], pool: ThreadPoolExecutor
    ) -> list[ReplicaFetch]:
        """Every replica of the job on ``name``: list each one's files, then one SFTP session."""
        plans: list[tuple[Replica, Path, list[sftp.Download], list[str]]] = []
        for rep in reps:
            local = self.dest / f"{rep.index}-{name}"
            if not (safe_relative(name) and safe_relative(f"{rep.launch}.log")) or "/" in (
                name + rep.launch
            ):  # names a worker gave: never a way out of DIR
                plans.append((rep, local, [], [f"{name}: bad node or launch name: skipped"]))
                continue
            try:
                downloads, errors = await self._plan(name, rep, local)
            except (VerbError, CallError) as e:
                plans.append((rep, local, [], [f"{name}: {e}"]))
                continue
            plans.append((rep, local, downloads, errors))
        every = [d for _, _, downloads, _ in plans for d in downloads]
        fetched: dict[str, sftp.Fetched] = {}
        failure = ""
        if every:
            try:
                target = self._target(name)
                loop = asyncio.get_running_loop()
                hop = self._hop(name)
                got = await loop.run_in_executor(pool, sftp.pull, target, every, hop)
                fetched = {f.remote: f for f in got}
            except (sftp.PushError, OSError) as e:
                failure = str(e)
        out = []
        for rep, local, downloads, errors in plans:
            files, size, errs = [], 0, list(errors)
            for d in downloads:
                f = fetched.get(d.remote)
                if failure:
                    errs.append(failure)
                    break
                if f is None or f.error:
                    errs.append(f.error if f is not None else f"{d.remote}: not fetched")
                    continue
                files.append(str(d.local.relative_to(local)))
                size += f.bytes
            out.append(ReplicaFetch(rep.index, name, str(local), files, size, errs))
        return out

    async def _plan(
        self, name: str, rep: Replica, local: Path
    ) -> tuple[list[sftp.Download], list[str]]:
        """What to copy for ``rep``: its log, and its files matching the job's patterns."""
        view = self.master.cluster.node(name) if self.master.cluster.has_node(name) else None
        if view is None or not view.root:
            raise VerbError(f"unknown node {name}: it has not reported since the master started")
        app = self.job.app
        log = posixpath.join(view.root, "apps", app, "logs", f"{rep.launch}.log")
        downloads = [sftp.Download(log, local / f"{rep.launch}.log")]
        errors: list[str] = []
        if self.job.outputs:
            link = self.master.link(name)
            workdir = self.job.workdir(rep.index)
            reply = await link.call(
                lambda i: JobFiles(id=i, app=app, workdir=workdir, globs=self.job.outputs),
                JobFilesReply,
                timeout=60.0,
            )
            for f in reply.files:
                if not safe_relative(f.path):
                    errors.append(f"{name} listed {f.path!r}: not a path inside the job: skipped")
                    continue
                remote = posixpath.join(reply.path, f.path)
                downloads.append(sftp.Download(remote, local / f.path))
        return downloads, errors

    def _target(self, name: str) -> sftp.SshTarget:
        view = self.master.cluster.node(name)
        return ssh_target(view, self.ssh, self.ssh.trust_unknown_host_keys)

    def _hop(self, name: str) -> sftp.Progress | None:
        if self.progress is None:
            return None
        return thread_progress(self.progress, name, PROGRESS_INTERVAL)


def prepare(master: Master, job_id: int, to: str | Path) -> tuple[Job, Path]:
    """The job and ``to/ID`` (made), checked before anything is fetched; VerbError if not."""
    job = master.jobs.get(job_id)
    if not any(r.node and r.launch for r in job.replicas):
        raise VerbError(f"job {job.id} has no replica that started: nothing to fetch")
    return job, local_dir(to, job.id)


async def fetch(
    master: Master,
    ssh: SshConfig,
    job_id: int,
    to: str | Path,
    progress: FetchProgress | None,
    purge: bool = False,
) -> FetchResult:
    """Fetch job ``job_id``'s logs and outputs into ``to/ID/``; see the module's text."""
    job, dest = prepare(master, job_id, to)
    return await Fetch(master, ssh, job, dest, progress, purge).run()
