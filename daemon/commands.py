"""The worker's requests, one handler each, and the dispatcher that runs them.

Each handler takes the request and returns its reply; a `Refusal` becomes
an ``Error(id, message)``.  Wire format, master -> worker -> master::

    Launch(id, app, argv, env, key, workdir)
                                     -> Launched(id, proc)   (same key: the first proc;
                                        proc.key = key, kept across restarts;
                                        workdir: jobs/ID/INDEX in the app dir, made
                                        0700 and the program's cwd)
    LaunchBatch(id, app, argv, env, items[key, workdir, env])
                                     -> LaunchedBatch(id, procs)   (one proc per item, in
                                        order; each item as a Launch with its key and
                                        workdir, its env over the batch's; the items
                                        not seen before start all
                                        or none: one Error, nothing started)
    Status(id)                       -> StatusReply(id, procs)
    Signal(id, pid, signal)          -> Signalled(id, delivered, message, proc)
    Usage(id)                        -> UsageReply(id, procs, children_*)
    Logs(id, pid, tail, offset, follow, limit, before, find)
                                     -> LogChunk(id, offset, data, eof, size, found)
                                        then, with follow, LogChunk events
    Unfollow(id, stream)             -> Ok(id)
    Files(id, app?)                  -> FilesReply(id, apps)
    Hashes(id, app, paths)           -> HashesReply(id, hashes)
    Remove(id, app, force, logs)     -> Removed(id, removed, stopped)   (jobs/ always)
    PrepareApp(id, app)              -> AppReady(id, path)
    JobFiles(id, app, workdir, globs)
                                     -> JobFilesReply(id, path, files)
                                        (path: the workdir's absolute path here;
                                        files: regular files matching a glob, no
                                        symlink followed; [] if none or missing)
    BundleHave(id, sha256)           -> BundleAt(id, present, path)   (path: ROOT/bundles/SHA256
                                        if present, else where to send it over SFTP)
    BundleCommit(id, sha256)         -> BundleAt(id, True, path)   (hash checked, kept)
    Unpack(id, app, workdir, sha256, key)
                                     -> UnpackReply(id, files, bytes, seconds)
                                        (unpacked safely as the workdir, in a thread;
                                        an Error names the member refused)
    Purge(id, app, workdir)          -> Removed(id, removed)
    anything else with an id         -> Error(id, "unsupported request: ...")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from corral.daemon import bundles, jobs, logs, unpack
from corral.daemon.beneath import Beneath
from corral.daemon.errors import Refusal
from corral.daemon.logs import LogStreams
from corral.daemon.store import AppStore, StoreError
from corral.daemon.supervisor import Supervisor
from corral.transport import messages as m
from corral.transport.connection import ConnectionClosed

Log = Callable[[str], None]
LAUNCH_KEYS = 4096  # request keys remembered for idempotent launches


class Handlers:
    """The request handlers for one master connection."""

    def __init__(
        self,
        sup: Supervisor,
        store: AppStore,
        send: Callable[[m.Message], Awaitable[None]],
        log: Log,
        launch_keys: OrderedDict[str, asyncio.Future[m.ProcInfo]] | None = None,
        send_now: Callable[[m.Message], None] | None = None,
    ) -> None:
        """``send_now``, if given, sends without waiting (a launch's reply, ahead of its exec)."""
        self.sup = sup
        self.store = store
        self.send = send
        self.send_now = send_now
        self.log = log
        self.launch_keys = OrderedDict() if launch_keys is None else launch_keys
        self.streams = LogStreams(send)
        self._table: dict[type, Callable[[Any], Awaitable[m.Message | None]]] = {
            m.Launch: self.launch,
            m.LaunchBatch: self.launch_batch,
            m.Status: self.status,
            m.Signal: self.signal,
            m.Usage: self.usage,
            m.Logs: self.logs,
            m.Unfollow: self.unfollow,
            m.Files: self.files,
            m.Hashes: self.hashes,
            m.Remove: self.remove,
            m.PrepareApp: self.prepare,
            m.JobFiles: self.job_files,
            m.BundleHave: self.bundle_have,
            m.BundleCommit: self.bundle_commit,
            m.Unpack: self.unpack,
            m.Purge: self.purge,
        }

    async def handle(self, msg: Any) -> None:
        """Run the handler for ``msg`` and send its reply; never raises for bad input."""
        handler = self._table.get(type(msg))
        try:
            if handler is None:
                raise Refusal(f"unsupported request: {type(msg).__name__}")
            reply = await handler(msg)
        except Refusal as e:
            reply = m.Error(id=msg.id, message=str(e))
        except Exception as e:  # a bug must cost one request, not the daemon
            self.log(f"internal error in {type(msg).__name__}: {e!r}")
            reply = m.Error(id=msg.id, message=f"internal error: {type(e).__name__}: {e}")
        if reply is not None:
            await self.send(reply)

    async def close(self) -> None:
        await self.streams.close_all()

    # ------------------------------------------------------------ processes

    async def launch(self, req: m.Launch) -> m.Message | None:
        # The launch itself runs in a task of its own, shielded: a session
        # that ends (the master died) cancels this handler, never a launch
        # half done, which would start a program its key no longer names.
        early = _Early(self.send_now, lambda infos: m.Launched(id=req.id, proc=infos[0]))
        if req.key:
            info = await self._launch_once(req, early)
        else:
            info = await asyncio.shield(self._start(req, early))
        return None if early.sent else m.Launched(id=req.id, proc=info)

    def _start(self, req: m.Launch, early: _Early) -> asyncio.Future[m.ProcInfo]:
        """The launch as a task of its own, whose failure is heard even with nobody waiting."""
        task = asyncio.ensure_future(self._launch(req, early))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _launch(self, req: m.Launch, early: _Early) -> m.ProcInfo:
        info = await self.sup.launch(req.app, req.argv, req.env, req.key, req.workdir, early)
        self.log(f"launched {req.app}: {' '.join(req.argv)} as pid {info.pid}")
        return info

    async def _launch_once(self, req: m.Launch, early: _Early) -> m.ProcInfo:
        """The process launched under ``req.key``: started now, or the one started before."""
        first = self.launch_keys.get(req.key)
        if first is not None:
            return await self._seen(req.key, first)
        task = self._start(req, early)
        self.launch_keys[req.key] = task
        while len(self.launch_keys) > LAUNCH_KEYS:
            self.launch_keys.popitem(last=False)
        task.add_done_callback(lambda t: self._forget_failed(req.key, t))
        return await asyncio.shield(task)

    def _forget_failed(self, key: str, task: asyncio.Future[m.ProcInfo]) -> None:
        """A launch that started nothing: a retry with its key may try again."""
        failed = task.cancelled() or task.exception() is not None
        if failed and self.launch_keys.get(key) is task:
            del self.launch_keys[key]

    async def launch_batch(self, req: m.LaunchBatch) -> m.Message | None:
        check_batch(req)
        first = {i.key: self.launch_keys[i.key] for i in req.items if i.key in self.launch_keys}
        new = [i for i in req.items if i.key not in first]
        started: dict[str, asyncio.Future[m.ProcInfo]] = {}
        # All new: the reply goes as soon as the pids are known.
        early = _Early(
            self.send_now if not first else None,
            lambda infos: m.LaunchedBatch(id=req.id, procs=infos),
        )
        if new:
            # One task starts them all (shielded, as a single launch is);
            # each key is remembered by a future of its own process.
            batch = asyncio.ensure_future(self._launch_many(req, new, early))
            for index, item in enumerate(new):
                pick = asyncio.ensure_future(_pick(batch, index))
                pick.add_done_callback(functools.partial(self._forget_failed, item.key))
                started[item.key] = self.launch_keys[item.key] = pick
            while len(self.launch_keys) > LAUNCH_KEYS:
                self.launch_keys.popitem(last=False)
        procs = []
        for item in req.items:
            if item.key in started:
                procs.append(await asyncio.shield(started[item.key]))
            else:
                procs.append(await self._seen(item.key, first[item.key]))
        return None if early.sent else m.LaunchedBatch(id=req.id, procs=procs)

    async def _launch_many(
        self, req: m.LaunchBatch, items: list[m.LaunchItem], early: _Early
    ) -> list[m.ProcInfo]:
        triples = [(i.key, i.workdir, i.env) for i in items]
        infos = await self.sup.launch_many(req.app, req.argv, req.env, triples, early)
        pids = ", ".join(str(info.pid) for info in infos)
        self.log(f"launched {req.app}: {' '.join(req.argv)} as pids {pids}")
        return infos

    async def _seen(self, key: str, first: asyncio.Future[m.ProcInfo]) -> m.ProcInfo:
        """The process launched under ``key`` before, as it is now."""
        info = await asyncio.shield(first)
        self.log(f"launch key {key} seen before: pid {info.pid}, nothing started")
        proc = self.sup.procs.get(info.launch)
        return info if proc is None else self.sup.refresh(proc)

    async def status(self, req: m.Status) -> m.Message:
        return m.StatusReply(id=req.id, procs=self.sup.infos())

    async def signal(self, req: m.Signal) -> m.Message:
        delivered, message, info = self.sup.signal(req.pid, req.signal)
        if delivered:
            self.log(f"sent {req.signal} to pid {req.pid}")
        return m.Signalled(id=req.id, delivered=delivered, message=message, proc=info)

    async def usage(self, req: m.Usage) -> m.Message:
        ru = await self.sup.children_usage()
        return m.UsageReply(
            id=req.id,
            procs=self.sup.infos(),
            children_user=ru.utime,
            children_sys=ru.stime,
            children_max_rss=ru.maxrss * 1024,
        )

    # ------------------------------------------------------------ logs

    async def logs(self, req: m.Logs) -> None:
        """Reply with a tail or the bytes at an offset, then maybe follow."""
        proc = self.sup.find(req.pid)
        if proc is None:
            raise Refusal(f"no such process: {req.pid}")
        path = self.store.log_path(proc.rec.app, proc.rec.launch)
        ended = proc.ended.is_set()  # before reading: see logs.LogStreams._follow
        if req.limit < 0:
            raise Refusal(f"bad log limit {req.limit}")
        cap = min(req.limit or logs.CHUNK, logs.CHUNK)
        if req.find:
            return await self._find(req, path, ended, cap)
        if req.before is not None:
            if req.before < 0:
                raise Refusal(f"bad log offset {req.before}")
            if req.follow:
                raise Refusal("a page before an offset cannot be followed")
            offset, data, size = logs.read_before(path, req.before, cap)
        elif req.offset is None:
            offset, data = logs.tail(path, req.tail, cap)
            size = logs.log_size(path)
        elif req.offset < 0:
            raise Refusal(f"bad log offset {req.offset}")
        else:
            offset = req.offset
            data, size = logs.read_at(path, offset, cap)
        eof = ended and offset + len(data) >= size
        reply = m.LogChunk(id=req.id, offset=offset, data=data, eof=eof, size=size)
        await self.send(reply)
        if req.follow and not eof:
            self.streams.open(req.id, path, offset + len(data), proc.ended)

    async def _find(self, req: m.Logs, path: Beneath, ended: bool, cap: int) -> None:
        """Logs(find=...): the page from the next (or previous) line holding the text."""
        if req.follow:
            raise Refusal("a search cannot be followed")
        at = req.before if req.before is not None else req.offset or 0
        if at < 0:
            raise Refusal(f"bad log offset {at}")
        needle = req.find.encode()
        found = await asyncio.to_thread(logs.find, path, needle, at, req.before is not None)
        if found < 0:
            size = logs.log_size(path)
            reply = m.LogChunk(id=req.id, offset=at, data=b"", size=size, found=-1)
        else:
            data, size = logs.read_at(path, found, cap)
            eof = ended and found + len(data) >= size
            reply = m.LogChunk(id=req.id, offset=found, data=data, eof=eof, size=size, found=found)
        await self.send(reply)

    async def unfollow(self, req: m.Unfollow) -> m.Message:
        self.streams.close(req.stream)
        return m.Ok(id=req.id)

    # ------------------------------------------------------------ apps

    async def files(self, req: m.Files) -> m.Message:
        names = [req.app] if req.app is not None else self.store.apps()
        apps = await asyncio.to_thread(self._list_files, names, req.app is not None)
        return m.FilesReply(id=req.id, apps=apps)

    def _list_files(self, names: list[str], strict: bool) -> list[m.AppInfo]:
        out = []
        for name in names:
            try:
                files = self.store.files(name)
            except (StoreError, OSError):
                if strict:
                    raise
                continue  # vanished or unreadable while listing all: skip it
            out.append(m.AppInfo(name=name, files=files, procs_alive=len(self.sup.alive(name))))
        return out

    async def hashes(self, req: m.Hashes) -> m.Message:
        hashes = await asyncio.to_thread(self.store.hashes, req.app, req.paths)
        return m.HashesReply(id=req.id, hashes=hashes)

    async def prepare(self, req: m.PrepareApp) -> m.Message:
        path = self.store.ensure(req.app)
        swept: list[str] = []
        if req.idle > 0:
            swept = await asyncio.to_thread(self.store.sweep_uploads, req.app, req.idle)
        for what in swept:
            self.log(f"removed {req.app}/{what}, left by a deploy that did not finish")
        return m.AppReady(id=req.id, path=str(path), swept=swept)

    async def job_files(self, req: m.JobFiles) -> m.Message:
        self.store.app_dir(req.app)  # the name first: refused before anything else
        workdir = jobs.workdir_parts(req.workdir)
        globs = jobs.compile_globs(req.globs)
        files = await asyncio.to_thread(self.store.job_files, req.app, workdir, globs)
        path = self.store.workdir_path(req.app, workdir)
        return m.JobFilesReply(id=req.id, path=path, files=files)

    # ------------------------------------------------------------ bundles

    async def bundle_have(self, req: m.BundleHave) -> m.Message:
        store = self.store
        present, incoming, swept = await asyncio.to_thread(
            bundles.have, store.fd, str(store.root), req.sha256, req.idle
        )
        for what in swept:
            self.log(f"removed bundles/incoming/{what}, left by a send that did not finish")
        where = f"{store.root}/{bundles.BUNDLES}/{req.sha256}" if present else incoming
        return m.BundleAt(id=req.id, present=present, path=where)

    async def bundle_commit(self, req: m.BundleCommit) -> m.Message:
        store = self.store
        path = await asyncio.to_thread(bundles.commit, store.fd, str(store.root), req.sha256)
        self.log(f"bundle {req.sha256[:12]} received")
        old = await asyncio.to_thread(bundles.sweep, store.fd, bundles.KEEP, time.time())
        if old:
            self.log(f"removed {len(old)} bundles unused for {bundles.KEEP / 86400:.0f} days")
        return m.BundleAt(id=req.id, present=True, path=path)

    async def unpack(self, req: m.Unpack) -> m.Message:
        store = self.store
        store.app_dir(req.app)  # the name first: refused before anything else
        workdir = jobs.workdir_parts(req.workdir)
        bundles.check_sha(req.sha256)
        t0 = time.monotonic()

        def work() -> unpack.Unpacked:
            store.ensure(req.app)
            return bundles.unpack_into(
                store.fd, req.app, workdir, req.sha256, store.bundle_limits, req.key
            )

        try:
            done = await asyncio.to_thread(work)
        except unpack.UnpackError as e:
            self.log(f"bundle {req.sha256[:12]} refused for {req.app}/{req.workdir}: {e}")
            raise
        return m.UnpackReply(
            id=req.id, files=done.files, bytes=done.bytes, seconds=time.monotonic() - t0
        )

    async def purge(self, req: m.Purge) -> m.Message:
        self.store.app_dir(req.app)
        workdir = jobs.workdir_parts(req.workdir)
        if len(workdir) < 2:
            raise Refusal(f"refusing to purge {req.workdir!r}: not a replica's directory")
        gone = await asyncio.to_thread(bundles.purge, self.store.fd, req.app, workdir)
        removed = [f"apps/{req.app}/{req.workdir}"] if gone else []
        return m.Removed(id=req.id, removed=removed)

    async def remove(self, req: m.Remove) -> m.Message:
        self.store.existing(req.app)
        alive = self.sup.alive(req.app)
        if alive and not req.force:
            raise Refusal(f"app {req.app} has {len(alive)} running processes; use --force")
        stopped = await self.sup.stop_app(req.app)
        removed = await asyncio.to_thread(self.store.remove, req.app, req.logs)
        if req.logs:
            self.sup.forget_app(req.app)
        self.log(f"removed {req.app}: {', '.join(removed) or 'nothing'}")
        return m.Removed(id=req.id, removed=removed, stopped=stopped)


def check_batch(req: m.LaunchBatch) -> None:
    """Refuse a batch that is empty, too large, or whose keys are missing or repeated."""
    if not 1 <= len(req.items) <= m.MAX_BATCH:
        raise Refusal(f"bad launch batch: {len(req.items)} launches, give 1 to {m.MAX_BATCH}")
    keys = set()
    for item in req.items:
        if not item.key:
            raise Refusal("bad launch batch: every launch needs a request key")
        if item.key in keys:
            raise Refusal(f"bad launch batch: key {item.key[:80]!r} given twice")
        keys.add(item.key)


async def _pick(batch: asyncio.Future[list[m.ProcInfo]], index: int) -> m.ProcInfo:
    """The ``index``-th process of a batch launch."""
    return (await asyncio.shield(batch))[index]


class _Early:
    """A launch's reply, sent by `Supervisor.launch_many` once the pids are known (``told``).

    Without ``send_now`` it sends nothing, and the handler replies as usual.
    """

    def __init__(
        self,
        send_now: Callable[[m.Message], None] | None,
        make: Callable[[list[m.ProcInfo]], m.Message],
    ) -> None:
        self.send_now = send_now
        self.make = make
        self.sent = False

    def __call__(self, infos: list[m.ProcInfo]) -> None:
        if self.send_now is None:
            return
        with contextlib.suppress(ConnectionClosed):  # the handler's own send says so
            self.send_now(self.make(infos))
            self.sent = True
