"""The app store: ROOT/apps/APP/{bin,lib,logs,jobs}, file listings, hashes, removal, programs.

Every path read, written, executed or removed here resolves beneath ROOT at
the moment it is used (see `daemon.beneath`): app names are validated, each
walk starts from ROOT's fd, and a symlink where a directory is expected is
refused (or unlinked on removal), never followed.  Nothing is checked once
and trusted later: a directory swapped for a symlink after its first use is
refused at the next.  Blocking methods (`files`, `hashes`, `remove`) are
meant to run in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.daemon import beneath, jobs, unpack
from corral.daemon import exe as daemon_exe
from corral.daemon.beneath import APPS, LOGS, Beneath, StoreError
from corral.transport.messages import JOBS_DIR, UPLOAD_MARK, FileInfo, JobFile, valid_app_name

__all__ = ["AppStore", "Program", "StoreError"]

SUBDIRS = ("bin", "lib", LOGS)
LISTED = ("bin", "lib")  # the deployed part of an app (never jobs/: what jobs wrote)
DIR_MODES = {LOGS: 0o700}  # made so when new; 0755 otherwise
MAX_CACHE = 10_000

HashKey = tuple[int, int, int, int]


@dataclass(frozen=True)
class Program:
    """A launch's program, found and checked executable (see `AppStore.program`)."""

    path: str  # where it is; exec'd by this path when it is outside ROOT
    beneath: tuple[str, ...]  # inside ROOT: its place, symlinks resolved; () outside
    script: bool  # a "#!" script (exec'd beneath ROOT, it needs its directory's fd)


class AppStore:
    """The apps under ``ROOT/apps`` and a sha256 cache of their files.

    Holds ROOT open (``fd``) for the daemon's life: every walk starts there.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps_dir = root / APPS
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._hashes: dict[HashKey, str] = {}
        self.bundle_limits = unpack.Limits()  # the worker's --bundle-max-* flags

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------ layout

    def app_dir(self, app: str) -> Path:
        """``ROOT/apps/APP`` for a valid name (StoreError otherwise)."""
        if not valid_app_name(app):
            raise StoreError(f"invalid app name {app!r}")
        return self.apps_dir / app

    def log_path(self, app: str, launch: str) -> Beneath:
        """The launch's log, ``ROOT/apps/APP/logs/<launch>.log``: opened by a walk at each use."""
        self.app_dir(app)
        name = f"{launch}.log"
        if not beneath.valid_name(name):
            raise StoreError(f"bad launch id {launch!r}")
        return Beneath(self.fd, (APPS, app, LOGS, name))

    def ensure(self, app: str) -> Path:
        """Create the app's directories, none of which may be a symlink (checked at every call)."""
        os.close(self._open_app(app, create=True))
        return self.app_dir(app)

    def _open_app(self, app: str, create: bool = False) -> int:
        """A new fd for ``ROOT/apps/APP``; ``create`` makes sure of it and its subdirectories."""
        if not valid_app_name(app):
            raise StoreError(f"invalid app name {app!r}")
        fd = beneath.open_dir(self.fd, (APPS, app), create=create)
        if create:
            try:
                for sub in SUBDIRS:
                    beneath.ensure_dir(fd, sub, (APPS, app), DIR_MODES.get(sub, 0o755))
            except BaseException:
                os.close(fd)
                raise
        return fd

    def existing(self, app: str) -> Path:
        """The app dir, which must exist as a real directory."""
        os.close(self._existing(app))
        return self.app_dir(app)

    def _existing(self, app: str) -> int:
        self.app_dir(app)
        try:
            return beneath.open_dir(self.fd, (APPS, app))
        except FileNotFoundError:
            raise StoreError(f"no such app: {app}") from None

    def apps(self) -> list[str]:
        """Names of the apps present (real directories with valid names)."""
        try:
            fd = beneath.open_dir(self.fd, (APPS,))
        except (OSError, StoreError):
            return []
        try:
            with os.scandir(fd) as entries:
                names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        finally:
            os.close(fd)
        return sorted(n for n in names if valid_app_name(n))

    # ------------------------------------------------------------ programs

    def program(self, app: str, cmd: str, search: str, workdir: Sequence[str] = ()) -> Program:
        """Make sure of the app's directories (as `ensure`), then find ``cmd`` and check it.

        ``workdir`` (names checked by `jobs.workdir_parts`), a working
        directory inside the app dir, is made too (mode 0700, never through
        a symlink).  With a slash, ``cmd`` is taken as given (relative: to
        the working directory, else the app dir); else it is looked up in
        the app's ``bin/`` first, then on ``search`` (a PATH).  A program
        inside ROOT is opened by a walk (see `daemon.beneath`) and checked
        through that fd; the seed walks to it again when it execs it.
        `daemon.exe.NotExecutable` says why it cannot run, StoreError why
        it may not.
        """
        return self.programs(app, cmd, search, [tuple(workdir)])[0]

    def programs(
        self,
        app: str,
        cmd: str,
        search: str,
        workdirs: Sequence[Sequence[str]],
        make: bool = True,
    ) -> list[Program]:
        """`program` for several working directories (a job's replicas on this node) at once.

        ``cmd`` is looked up once, unless it is relative to each working
        directory (``./run.sh``), which is then made.  Without ``make``,
        the others are only checked as far as they exist (a symlink is
        refused): each seed makes the rest as it walks there
        (`beneath.walk_making`), after the launch's reply, since on a busy
        disk a directory's creation costs up to a millisecond.  One program
        per working directory, in order.
        """
        app_fd = self._open_app(app, create=True)
        work_fds: list[int] = []
        relative = "/" in cmd and not cmd.startswith("/")
        try:
            for workdir in workdirs:
                if workdir and (make or relative):
                    work_fds.append(self._make_workdir(app_fd, app, workdir))
                else:
                    work_fds.append(-1)
                    self._check_workdir(app_fd, app, workdir)
            if relative:
                return [
                    self._relative(app_fd if fd < 0 else fd, app, cmd, workdir if fd >= 0 else ())
                    for fd, workdir in zip(work_fds, workdirs, strict=True)
                ]
            found = self._find(app_fd, app, cmd)
        finally:
            os.close(app_fd)
            for fd in work_fds:
                if fd >= 0:
                    os.close(fd)
        if found is None:
            found = self._on_path(cmd, search)
        return [found] * len(workdirs)

    def _relative(self, base: int, app: str, cmd: str, workdir: Sequence[str]) -> Program:
        """``cmd`` with a slash, relative to ``base`` (the working directory, else the app dir)."""
        found = self._inside(base, cmd, (APPS, app, *workdir))
        if found is None:
            raise daemon_exe.NotExecutable(os.strerror(errno.ENOENT))
        return found

    def _find(self, app_fd: int, app: str, cmd: str) -> Program | None:
        """``cmd`` by its absolute path, or in the app's bin/; None: look it up on the PATH."""
        if cmd.startswith("/"):
            return self._absolute(cmd)
        if beneath.valid_name(cmd) and _present(app_fd, f"bin/{cmd}"):
            return self._inside(app_fd, f"bin/{cmd}", (APPS, app), lookup=True)
        return None

    def _on_path(self, cmd: str, search: str) -> Program:
        path = shutil.which(cmd, path=search)
        if path is None:
            raise daemon_exe.NotExecutable(os.strerror(errno.ENOENT))
        return self._absolute(path)

    @staticmethod
    def _check_workdir(app_fd: int, app: str, workdir: Sequence[str]) -> None:
        """Refuse a working directory with a symlink or a file where a directory goes.

        Walks as far as it exists: the rest its seed makes.
        """
        if workdir:
            with contextlib.suppress(FileNotFoundError):
                os.close(beneath.open_dir(app_fd, workdir, where=(APPS, app)))

    @staticmethod
    def _make_workdir(app_fd: int, app: str, workdir: Sequence[str]) -> int:
        """A new fd for the working directory ``workdir`` in the app dir, made if missing."""
        return beneath.open_dir(
            app_fd, workdir, where=(APPS, app), create=True, mode=jobs.WORKDIR_MODE
        )

    def _absolute(self, path: str) -> Program:
        prefix = f"{self.root}/"
        if path.startswith(prefix):  # named by its full path, yet inside ROOT all the same
            found = self._inside(self.fd, path[len(prefix) :], ())
            if found is None:
                raise daemon_exe.NotExecutable(os.strerror(errno.ENOENT))
            return found
        daemon_exe.check(path)
        return Program(path, (), False)

    def _inside(
        self, base: int, path: str, where: Sequence[str], lookup: bool = False
    ) -> Program | None:
        """The program at ``path`` beneath ``base`` (at ``where`` under ROOT); None if missing.

        A ``lookup`` (the way PATH is searched) also passes over what is
        not an executable file, as the shell would.
        """
        try:
            try:
                fd, walked = beneath.open_beneath(base, path, beneath.READ_FLAGS, where=where)
            except PermissionError:  # execute-only: open it for the exec alone
                fd, walked = beneath.open_beneath(base, path, os.O_PATH, where=where)
        except FileNotFoundError:
            return None
        except OSError as e:  # a loop of links, say
            raise daemon_exe.NotExecutable(os.strerror(e.errno or errno.EACCES)) from None
        try:
            if lookup and not _runnable(fd):
                return None
            script = daemon_exe.check_fd(fd)
        finally:
            os.close(fd)
        place = (*where, *walked)
        return Program(f"{self.root}/{beneath.rel(*place)}", place, script)

    # ------------------------------------------------------------ files and hashes

    def files(self, app: str) -> list[FileInfo]:
        """Every file under the app's bin/ and lib/, with its sha256.

        A symlink counts when it leads to a file inside the app.
        """
        app_fd = self._existing(app)
        out: list[FileInfo] = []
        try:
            for sub in LISTED:
                try:
                    sub_fd = beneath.open_dir(app_fd, (sub,))
                except (OSError, StoreError):
                    continue  # missing, or a symlink: nothing deployed there
                try:
                    # By fds, never descending into a symlink.
                    for dirpath, _dirs, names, _fd in os.fwalk(".", dir_fd=sub_fd):
                        for name in names:
                            path = os.path.normpath(os.path.join(sub, dirpath, name))
                            info = self._file_info(app_fd, path)
                            if info:
                                out.append(info)
                finally:
                    os.close(sub_fd)
        finally:
            os.close(app_fd)
        return sorted(out, key=lambda f: f.path)

    def sweep_uploads(self, app: str, idle: float) -> list[str]:
        """Remove the uploads dead deploys left in bin/ and lib/; say what went.

        An upload is a regular file named ``.NAME`` + `UPLOAD_MARK` + hex;
        one with no write for ``idle`` seconds is taken for dead (a deploy
        still sending writes all the time, and one that stalls gives up).
        Walked by fds; symlinks and other files are left alone.
        """
        app_fd = self._existing(app)
        swept: list[str] = []
        now = time.time()
        try:
            for sub in LISTED:
                try:
                    sub_fd = beneath.open_dir(app_fd, (sub,))
                except (OSError, StoreError):
                    continue
                try:
                    for dirpath, _dirs, names, dir_fd in os.fwalk(".", dir_fd=sub_fd):
                        for name in names:
                            if not name.startswith(".") or UPLOAD_MARK not in name:
                                continue
                            with contextlib.suppress(OSError):
                                st = os.lstat(name, dir_fd=dir_fd)
                                if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= idle:
                                    os.unlink(name, dir_fd=dir_fd)
                                    path = os.path.normpath(os.path.join(sub, dirpath, name))
                                    swept.append(f"{path} ({st.st_size} bytes)")
                finally:
                    os.close(sub_fd)
        finally:
            os.close(app_fd)
        return swept

    def _file_info(self, app_fd: int, path: str) -> FileInfo | None:
        """``path`` (relative to the app dir) if it is a regular file inside the app."""
        try:
            fd, _ = beneath.open_beneath(app_fd, path)
        except (OSError, StoreError):
            return None  # missing, unreadable, or leading out of the app
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            sha = self._sha256(fd, st)
        except OSError:
            return None
        finally:
            os.close(fd)
        return FileInfo(path, st.st_size, sha, stat.S_IMODE(st.st_mode))

    def hashes(self, app: str, paths: list[str]) -> dict[str, str]:
        """sha256 of each regular file in ``paths`` (relative to the app dir)."""
        app_fd = self._existing(app)
        out: dict[str, str] = {}
        try:
            for rel in paths:
                if not rel or "\0" in rel or os.path.isabs(rel) or ".." in Path(rel).parts:
                    continue
                info = self._file_info(app_fd, rel)
                if info is not None:
                    out[rel] = info.sha256
        finally:
            os.close(app_fd)
        return out

    def _sha256(self, fd: int, st: os.stat_result) -> str:
        """Hash the file open at ``fd``, cached by (device, inode, size, mtime)."""
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(key)
        if cached:
            return cached
        h = hashlib.sha256()
        while block := os.read(fd, 1 << 20):
            h.update(block)
        if len(self._hashes) >= MAX_CACHE:
            self._hashes.clear()  # rare; a cold cache only costs a re-hash
        self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    # ------------------------------------------------------------ job files

    def workdir_path(self, app: str, workdir: Sequence[str]) -> str:
        """The working directory's absolute path on this node (for the master's SFTP)."""
        return f"{self.app_dir(app)}/{beneath.rel(*workdir)}"

    def job_files(
        self, app: str, workdir: Sequence[str], globs: Sequence[jobs.Glob]
    ) -> list[JobFile]:
        """The regular files in the working directory ``workdir`` of ``app`` matching ``globs``.

        A missing app or working directory has none (the replica has not
        started, or wrote nothing); one reached through a symlink is a
        StoreError.  See `jobs.find_files`.
        """
        self.app_dir(app)
        try:
            fd = beneath.open_dir(self.fd, (APPS, app, *workdir))
        except FileNotFoundError:
            return []
        try:
            return jobs.find_files(fd, globs)
        finally:
            os.close(fd)

    # ------------------------------------------------------------ removal

    def remove(self, app: str, logs: bool) -> list[str]:
        """Remove bin/, lib/ and jobs/ (and logs/ and the app dir with ``logs``).

        Returns the removed paths relative to ROOT.  Everything is removed
        by directory fds (see `daemon.beneath.remove`): a symlink is
        unlinked, never followed, and a symlinked ``apps`` or app dir is
        refused.
        """
        self.app_dir(app)
        try:
            apps_fd = beneath.open_dir(self.fd, (APPS,))
        except FileNotFoundError:
            raise StoreError(f"no such app: {app}") from None
        try:
            try:
                app_fd = beneath.open_dir(apps_fd, (app,), where=(APPS,))
            except FileNotFoundError:
                raise StoreError(f"no such app: {app}") from None
            removed: list[str] = []
            try:
                for sub in (*LISTED, JOBS_DIR, *((LOGS,) if logs else ())):
                    if beneath.remove(app_fd, sub):
                        removed.append(beneath.rel(APPS, app, sub))
            finally:
                os.close(app_fd)
            if logs:
                beneath.remove(apps_fd, app)
                removed.append(beneath.rel(APPS, app))
        finally:
            os.close(apps_fd)
        return removed


def _present(dir_fd: int, path: str) -> bool:
    """Whether anything is at ``path``: a probe (one ``fstatat``) before the walk that opens it.

    It opens nothing and only says whether to look further: a program
    missing from bin/, the common case, costs one system call.
    """
    try:
        os.lstat(path, dir_fd=dir_fd)
    except OSError:
        return False
    return True


def _runnable(fd: int) -> bool:
    """A regular file we may execute (what a PATH search takes)."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.access(f"/proc/self/fd/{fd}", os.X_OK)
    except OSError:
        return False
