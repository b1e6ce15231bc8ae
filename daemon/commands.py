"""The worker's requests, one handler each, and the dispatcher that runs them.

Each handler takes the request and returns its reply; a `Refusal` becomes
an ``Error(id, message)``.  Wire format, master -> worker -> master::

    Launch(id, app, argv, env, key, workdir)
                                     -> Launched(id, proc)   (same key: the first proc;
                                        proc.key = key, kept across restarts;
                                        workdir: jobs/ID/INDEX in the app dir, made
                                        0700 and the program's cwd)
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
    ) -> None:
        self.sup = sup
        self.store = store
        self.send = send
        self.log = log
        self.launch_keys = OrderedDict() if launch_keys is None else launch_keys
        self.streams = LogStreams(send)
        self._table: dict[type, Callable[[Any], Awaitable[m.Message | None]]] = {
            m.Launch: self.launch,
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

    async def launch(self, req: m.Launch) -> m.Message:
        # The launch itself runs in a task of its own, shielded: a session
        # that ends (the master died) cancels this handler, never a launch
        # half done, which would start a program its key no longer names.
        if req.key:
            info = await self._launch_once(req)
        else:
            info = await asyncio.shield(self._start(req))
        return m.Launched(id=req.id, proc=info)

    def _start(self, req: m.Launch) -> asyncio.Future[m.ProcInfo]:
        """The launch as a task of its own, whose failure is heard even with nobody waiting."""
        task = asyncio.ensure_future(self._launch(req))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _launch(self, req: m.Launch) -> m.ProcInfo:
        info = await self.sup.launch(req.app, req.argv, req.env, req.key, req.workdir)
        self.log(f"launched {req.app}: {' '.join(req.argv)} as pid {info.pid}")
        return info

    async def _launch_once(self, req: m.Launch) -> m.ProcInfo:
        """The process launched under ``req.key``: started now, or the one started before."""
        first = self.launch_keys.get(req.key)
        if first is not None:
            info = await asyncio.shield(first)
            self.log(f"launch key {req.key} seen before: pid {info.pid}, nothing started")
            proc = self.sup.procs.get(info.launch)
            return info if proc is None else self.sup.refresh(proc)
        task = self._start(req)
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
        return m.AppReady(id=req.id, path=str(self.store.ensure(req.app)))

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
        present, incoming = bundles.have(store.fd, str(store.root), req.sha256)
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
