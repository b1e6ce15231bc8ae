"""The deploy verb: copy an executable and its non-system libraries to nodes.

Whoever runs the master makes one `Deployer` for it (the headless master
and the dashboard do) and hands it to the API and the views; this module
imports the master, never the other way round.  One deploy, in order::

    check      a program: ELF or #!         else refused (unless forced)
    resolve    elf.resolve(exe, libs, path) a missing library fails the verb
                                            before any node is asked anything; the
                                            caller's LD_LIBRARY_PATH is searched
    describe   stat every file              sizes, modes, app-dir paths
    per node, all nodes at once:
      ask      PrepareApp -> app dir, Hashes(app, paths) -> the node's sha256s
      plan     deploy.plan_node             a file the node lacks is sent; a
                                            file it has is compared by sha256
      push     sftp.push in a thread        one SSH client per thread; a dry
                                            run instead connects, checks the host
                                            key, logs in and opens SFTP (no writes),
                                            so an unreachable node is its error;
                                            64 MiB or more on 4+ cores: the bytes
                                            written by child processes (pusher)
    settle     Hashes(app, sent) again      in the background, off the verb's
                                            clock: checks what arrived and warms
                                            the worker's hash cache

A local file is hashed where a node has a copy to compare against, when
that node's answer comes, and after it is sent, for the settle check, off
the verb's clock: a first deploy sends at once and returns once the files
are in place.  On a small machine a hash beside the push slows the push
(200 MB to one node on 2 cores, medians of 8 in alternating runs: 0.59 and
0.65 s with the hash beside it, 0.56 and 0.49 s with it after).  Each file
is read once per deploy at most, and hashes are cached by (path, device,
inode, size, mtime), as the worker caches its own, so an unchanged
redeploy hashes nothing.

A failure on one node (host key refused, auth, sshd unreachable, worker
gone) is that node's one-line ``error``; the other nodes proceed.  Errors
in the input (app name, nodes, file, libraries, config) fail the whole verb
with `VerbError` before anything is sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from corral.master import deploy, elf, pusher
from corral.master.config import ConfigError, SshConfig, load_ssh
from corral.master.control import VerbError
from corral.master.deploy import LocalFile, NodePlan, PlanError
from corral.master.deploy_report import plan_text
from corral.master.server import WorkerLink
from corral.master.ssh import dead_upload_idle, thread_progress
from corral.master.ssh import target as ssh_target
from corral.master.text import human_bytes
from corral.transport import sftp
from corral.transport.connection import CallError
from corral.transport.messages import AppReady, Hashes, HashesReply, PrepareApp, valid_app_name

if TYPE_CHECKING:
    from corral.master.control import Master

log = logging.getLogger("corral.master")

# progress(node, sent_bytes, total_bytes), called on the event loop.  A node
# with nothing to send gets one call with total 0.
DeployProgress = Callable[[str, int, int], None]

MAX_PARALLEL = 32  # SSH clients (threads) at once
ET_EXEC, ET_DYN = 2, 3  # ELF e_type of a program (a PIE is ET_DYN, as a shared library is)
PROGRESS_INTERVAL = 0.05  # seconds between progress calls per node (plus the last)
# Waiting for a worker to hash files: at least 30 s, and 20 MiB/s at the slowest.
MiB = 2**20
SETTLE_PER_MIB = 0.05
SETTLE_TIMEOUT_MIN = 30.0


class FileEntry(msgspec.Struct, frozen=True):
    """A file of the app: its path in the app dir (``bin/x``, ``lib/y.so``) and size."""

    path: str
    bytes: int


class FileSent(msgspec.Struct, frozen=True):
    """A file delivered to a node, with its transfer time."""

    path: str
    bytes: int
    seconds: float


class NodeDeploy(msgspec.Struct, frozen=True):
    """One node's part of a deploy.

    ``to_send`` is the plan (what differed), ``sent`` what was delivered;
    with a dry run ``sent`` stays empty.  ``bytes`` and ``seconds`` are what
    this node cost: bytes delivered, and time from asking its hashes to the
    last file renamed into place.  ``error`` is one line, empty on success.
    ``ssh`` is the ``user@host:port`` a dry run logged in to.
    """

    node: str
    to_send: list[FileEntry] = []
    unchanged: list[FileEntry] = []
    sent: list[FileSent] = []
    bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    ssh: str = ""


class DeployResult(msgspec.Struct, frozen=True):
    """Every chosen node's outcome, and the plan as text (the ``--dry-run`` view)."""

    app: str
    file: str
    dry_run: bool
    results: list[NodeDeploy]
    plan: str
    libraries: list[str]  # local paths of the libraries deployed with the file
    system: list[str]  # sonames taken as present on every node (not copied)

    @property
    def failed(self) -> list[NodeDeploy]:
        return [r for r in self.results if r.error]


# --------------------------------------------------------------------------
# Local hashes
# --------------------------------------------------------------------------


class LocalHashes:
    """sha256 of local files, cached by path, device, inode, size and mtime."""

    MAX = 4096

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int, int, int], str] = {}
        self._running: dict[tuple[str, int, int, int, int], concurrent.futures.Future[str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int]:
        return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def cached(self, path: Path) -> str | None:
        with self._lock:
            return self._cache.get(self._key(path, path.stat()))

    def sha256(self, path: Path) -> str:
        """The file's sha256 (blocking: run it in a thread).  A file another thread
        is hashing (another deploy's) is waited for, not read a second time."""
        key = self._key(path, path.stat())
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            running = self._running.get(key)
            if running is None:
                mine = self._running[key] = concurrent.futures.Future()
        if running is not None:
            return running.result()
        try:
            digest = deploy.sha256_file(path)
            if self._key(path, path.stat()) == key:  # not rewritten meanwhile
                with self._lock:
                    if len(self._cache) >= self.MAX:
                        self._cache.clear()
                    self._cache[key] = digest
            mine.set_result(digest)
            return digest
        except BaseException as e:
            mine.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._running[key]


HASHES = LocalHashes()


def describe(plan: elf.DeployPlan) -> list[LocalFile]:
    """The plan's files as `LocalFile` rows, hashed only where the cache knows them.

    Same layout as `deploy.local_files` (``bin/<exe>``, ``lib/<name>``, modes
    kept, two files on one path refused) but without hashing: ``sha256`` is
    "" for a file not hashed yet.
    """
    rows = [(plan.executable, f"bin/{plan.executable.name}")]
    rows += [(lib, f"lib/{lib.name}") for lib in plan.libraries]
    files: list[LocalFile] = []
    seen: dict[str, Path] = {}
    for path, rel in rows:
        if rel in seen:
            raise PlanError(f"{path} and {seen[rel]} would both be deployed as {rel}")
        seen[rel] = path
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise PlanError(f"{path}: not a regular file")
        sha = HASHES.cached(path) or ""
        files.append(LocalFile(path, rel, st.st_size, stat.S_IMODE(st.st_mode), sha))
    return files


def not_a_program(path: Path) -> str:
    """Why ``path`` cannot run as a program ("" if it can): ELF executables and ``#!`` scripts can.

    An ELF file must be an executable or a shared object (a PIE is one); a
    relocatable object (``hello.o``) or a core dump is not a program.
    """
    with path.open("rb") as f:
        head = f.read(18)
    if head.startswith(b"#!"):
        return ""
    if head.startswith(b"\x7fELF") and len(head) == 18 and head[5] in (1, 2):
        e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
        return "" if e_type in (ET_EXEC, ET_DYN) else "an ELF file that is not an executable"
    return "neither an ELF executable nor a script starting with #!"


def _resolve(
    file: Path, libs: list[Path], ld_library_path: str | None, force: bool
) -> tuple[elf.DeployPlan, list[LocalFile]]:
    """Blocking: the dependency plan and its files; VerbError for any bad input."""
    if not file.exists():
        raise VerbError(f"no such file: {file}")
    if not file.is_file():
        raise VerbError(f"not a regular file: {file}")
    for lib in libs:
        if not lib.is_file():
            raise VerbError(f"--lib {lib}: no such file")
    try:
        if not force and (why := not_a_program(file)):
            raise VerbError(f"cannot deploy {file.name}: {why}; --force deploys it anyway")
        plan = elf.resolve(file, libs, ld_library_path)
        return plan, describe(plan)
    except elf.DependencyError as e:
        raise VerbError(f"cannot deploy {file.name}: {e}; nothing was sent") from None
    except PlanError as e:
        raise VerbError(f"cannot deploy {file.name}: {e}") from None
    except OSError as e:
        raise VerbError(f"cannot read {e.filename or file}: {e.strerror or e}") from None


# --------------------------------------------------------------------------
# The verb
# --------------------------------------------------------------------------


class Deployer:
    """Deploys for one `Master`; remembers each node's background settle check."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self._settling: dict[str, set[asyncio.Task[None]]] = {}

    def ssh_config(self) -> SshConfig:
        if self.master.config.ssh is not None:
            return self.master.config.ssh
        try:
            return load_ssh(self.master.config.state_dir)
        except ConfigError as e:
            raise VerbError(str(e)) from None

    async def deploy(
        self,
        file: str | Path,
        app: str | None = None,
        nodes: Sequence[str] = (),
        all_nodes: bool = False,
        libs: Sequence[str | Path] = (),
        dry_run: bool = False,
        trust_host_key: bool = False,
        progress: DeployProgress | None = None,
        *,
        force: bool = False,
        ld_library_path: str | None = None,
    ) -> DeployResult:
        """Copy ``file`` and the non-system libraries it needs into ``app`` on each node.

        Only what differs from a node's copy (by sha256) is sent, over SFTP,
        nodes in parallel; ``progress(node, sent_bytes, total_bytes)`` is
        called on the loop as bytes go.  Libraries are looked up on
        ``ld_library_path`` (the caller's; None: this process's).  A file
        that is not a program is refused unless ``force``.
        """
        if not str(file):
            raise VerbError("nothing to deploy: give a file")
        path = Path(file).expanduser().absolute()
        app = app or path.name
        if not valid_app_name(app):
            raise VerbError(f"invalid app name {app!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        picked = self.master.select_nodes(nodes, all_nodes)
        links, unreachable = self.master.links(picked)  # a lost node is its own failure
        ssh = self.ssh_config()
        lib_paths = [Path(p).expanduser().absolute() for p in libs]
        plan, files = await asyncio.to_thread(_resolve, path, lib_paths, ld_library_path, force)
        trust = trust_host_key or ssh.trust_unknown_host_keys
        run = _Run(self, app, files, _Hashing(files), ssh, dry_run, trust, progress, len(links))
        done = {r.node: r for r in await run.all(links)}
        results = [done.get(n) or NodeDeploy(node=n, error=unreachable[n]) for n in picked]
        if not dry_run:
            for r in results:
                self._note(app, r)
        return DeployResult(
            app=app,
            file=str(path),
            dry_run=dry_run,
            results=results,
            plan=plan_text([msgspec.to_builtins(r) for r in results]),
            libraries=[str(p) for p in plan.libraries],
            system=list(plan.system),
        )

    def _note(self, app: str, r: NodeDeploy) -> None:
        if r.error:
            why = f"app {app} not deployed to {r.node}: {r.error}"
            self.master.cluster.note("app.deploy_failed", r.node, why)
            return
        sent = f"{len(r.sent)} sent ({human_bytes(r.bytes)})" if r.sent else "0 sent"
        self.master.cluster.note(
            "app.deployed",
            r.node,
            f"app {app} deployed to {r.node}: {sent}, {len(r.unchanged)} unchanged",
        )

    async def wait_settled(self, node: str) -> None:
        """Let earlier deploys' background checks on ``node`` finish first."""
        pending = [t for t in self._settling.get(node, ()) if not t.done()]
        if pending:
            await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)

    def settle(
        self,
        node: str,
        link: WorkerLink,
        app: str,
        sent: list[LocalFile],
        hashing: _Hashing,
    ) -> None:
        """After a push: have the worker hash what arrived, off the verb's clock.

        This warms the worker's hash cache (a renamed-in file is a new inode),
        so the next deploy's question is answered at once, and catches a copy
        that differs from what was sent (an event says so; the next deploy
        sends it again, as its hash differs).  ``hashing``: this deploy's local
        hashes; one not taken yet is started now, beside the worker's.
        """
        total = sum(f.size for f in sent)
        timeout = max(SETTLE_TIMEOUT_MIN, total / MiB * SETTLE_PER_MIB)

        # Hashed here, as the worker hashes its copy: one pass each, side by side.
        local = {f.rel: hashing.get(f.rel) for f in sent}

        async def check() -> None:
            paths = [f.rel for f in sent]
            try:
                reply = await link.call(
                    lambda i: Hashes(id=i, app=app, paths=paths), HashesReply, timeout
                )
                for f in sent:
                    got, want = reply.hashes.get(f.rel), await local[f.rel]
                    if got != want:
                        self.master.cluster.note(
                            "app.deploy_failed",
                            node,
                            f"app {app} on {node}: {f.rel} does not match what was sent "
                            f"({(got or 'missing')[:12]} != {want[:12]}); deploy again",
                        )
            except (CallError, OSError) as e:
                log.info("deploy check of %s on %s skipped: %s", app, node, e)

        task = asyncio.ensure_future(check())
        tasks = self._settling.setdefault(node, set())
        tasks.add(task)

        def forget(done: asyncio.Task[None]) -> None:
            tasks.discard(done)
            if not tasks and self._settling.get(node) is tasks:
                del self._settling[node]

        task.add_done_callback(forget)


def _done(loop: asyncio.AbstractEventLoop, value: str) -> asyncio.Future[str]:
    fut: asyncio.Future[str] = loop.create_future()
    fut.set_result(value)
    return fut


class _Hashing:
    """One deploy's local sha256s, each started when first asked for (`get`), once.

    A hash is started when a node has a copy to compare, or after a push for
    the settle check; a file whose hash nobody asks for is never read twice.
    """

    def __init__(self, files: list[LocalFile]) -> None:
        self._files = {f.rel: f for f in files}
        self._started: dict[str, asyncio.Future[str]] = {}

    def get(self, rel: str) -> asyncio.Future[str]:
        """The sha256 of the file at ``rel``: cached, or computed in a thread."""
        fut = self._started.get(rel)
        if fut is None:
            f = self._files[rel]
            if f.sha256:  # `describe` found it cached
                fut = _done(asyncio.get_running_loop(), f.sha256)
            else:  # the thread looks in the cache first; no stat on the loop
                fut = asyncio.ensure_future(asyncio.to_thread(HASHES.sha256, f.local))
                fut.add_done_callback(_retrieved)  # a settle check may be gone
            self._started[rel] = fut
        return fut


def _error_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


@dataclasses.dataclass
class _Run:
    """One deploy in flight: what every node shares."""

    deployer: Deployer
    app: str
    files: list[LocalFile]
    hashing: _Hashing
    ssh: SshConfig
    dry_run: bool
    trust: bool
    progress: DeployProgress | None
    nodes: int  # how many nodes it goes to: SSH clients (threads) at once, up to MAX_PARALLEL
    pool: ThreadPoolExecutor = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        workers = max(1, min(MAX_PARALLEL, self.nodes))
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="corral-deploy")

    async def all(self, links: dict[str, WorkerLink]) -> list[NodeDeploy]:
        """Every node's outcome, nodes at once."""
        try:
            return list(await asyncio.gather(*(self.node(n, lk) for n, lk in links.items())))
        finally:
            self.pool.shutdown(wait=False)

    async def node(self, name: str, link: WorkerLink) -> NodeDeploy:
        t0 = time.monotonic()
        reach: asyncio.Future[None] | None = None
        try:
            if self.dry_run:  # would a push get in? log in meanwhile, write nothing
                target = self._target(name)
                reach = asyncio.get_running_loop().run_in_executor(self.pool, sftp.reach, target)
                reach.add_done_callback(_retrieved)  # an early failure below leaves it unread
            await self.deployer.wait_settled(name)
            app_dir, remote = await self._ask(link)
            plan = await self._plan(name, remote)
            result = NodeDeploy(
                node=name,
                to_send=[FileEntry(f.rel, f.size) for f in plan.send],
                unchanged=[FileEntry(f.rel, f.size) for f in plan.unchanged],
            )
            if reach is not None:
                await reach
                where = f"{target.user}@{target.host}:{target.port}"
                return msgspec.structs.replace(result, ssh=where)
            if not plan.send:
                self._report(name, 0, 0)
                return msgspec.structs.replace(result, seconds=time.monotonic() - t0)
            report = await self._push(name, app_dir, plan)
        except (CallError, sftp.PushError, OSError, VerbError) as e:
            return NodeDeploy(node=name, seconds=time.monotonic() - t0, error=_error_line(e))
        self.deployer.settle(name, link, self.app, plan.send, self.hashing)
        return msgspec.structs.replace(
            result,
            sent=[_sent(s, app_dir) for s in report.files],
            bytes=report.bytes,
            seconds=time.monotonic() - t0,
        )

    async def _ask(self, link: WorkerLink) -> tuple[str, dict[str, str]]:
        """The node's app dir and its sha256 of each of our paths it has."""
        paths = deploy.rel_paths(self.files)
        # The worker may have to hash its copies first (a cold cache).
        timeout = max(SETTLE_TIMEOUT_MIN, sum(f.size for f in self.files) / MiB * SETTLE_PER_MIB)
        app_dir = ""
        if not self.dry_run:  # a dry run changes nothing, not even an empty dir
            idle = dead_upload_idle(self.ssh)
            ready = await link.call(lambda i: PrepareApp(id=i, app=self.app, idle=idle), AppReady)
            app_dir = ready.path
            for what in ready.swept:
                note = f"removed {self.app}/{what}, left by a deploy that did not finish"
                self.deployer.master.cluster.note("deploy.swept", link.name, note)
        try:
            reply = await link.call(
                lambda i: Hashes(id=i, app=self.app, paths=paths), HashesReply, timeout
            )
        except CallError as e:
            if self.dry_run and str(e).startswith("no such app"):
                return app_dir, {}
            raise
        return app_dir, dict(reply.hashes)

    async def _plan(self, name: str, remote: dict[str, str]) -> NodePlan:
        """Compare what the node has; a file it lacks needs no local hash to decide."""
        files = []
        for f in self.files:
            if f.rel in remote and not f.sha256:
                f = dataclasses.replace(f, sha256=await self.hashing.get(f.rel))
            files.append(f)
        return deploy.plan_node(name, files, remote)

    def _target(self, name: str) -> sftp.SshTarget:
        view = self.deployer.master.cluster.node(name)
        return ssh_target(view, self.ssh, self.trust)

    async def _push(self, name: str, app_dir: str, plan: NodePlan) -> sftp.PushReport:
        target = self._target(name)
        uploads = deploy.uploads(plan, app_dir)
        parts = pusher.parts_for(self.nodes, sum(f.size for f in plan.send))
        if parts:  # beyond what one packet loop moves, and cores to spare: processes
            return await pusher.push(target, uploads, self._progress_on_loop(name), parts)
        callback = self._progress_hop(name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, sftp.push, target, uploads, callback)

    def _progress_on_loop(self, name: str) -> sftp.Progress | None:
        """A ``(done, total)`` callback on the loop, at most every 50 ms (and at the end)."""
        if self.progress is None:
            return None
        last = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if done < total and now - last < PROGRESS_INTERVAL:
                return
            last = now
            self._report(name, done, total)

        return report

    def _report(self, name: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        try:
            self.progress(name, done, total)
        except Exception:  # a view's bug must not fail the deploy
            log.exception("deploy progress callback failed")

    def _progress_hop(self, name: str) -> sftp.Progress | None:
        """A callback for the push thread that hops onto the loop, at most every 50 ms."""
        if self.progress is None:
            return None
        return thread_progress(self._report, name, PROGRESS_INTERVAL)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read: asyncio logs an exception nobody read


def _sent(s: sftp.Sent, app_dir: str) -> FileSent:
    base = app_dir.rstrip("/") + "/"
    rel = s.remote[len(base) :] if s.remote.startswith(base) else s.remote
    return FileSent(rel, s.bytes, s.seconds)
