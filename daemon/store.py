"""The app store: ROOT/apps/APP/{bin,lib,logs}, file listings, hashes, removal.

Every path read, written or removed here resolves inside ROOT: app names are
validated, and a symlink where a directory is expected is never followed
(it is refused, or unlinked on removal).  Blocking methods (`files`,
`hashes`, `remove`) are meant to run in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from pathlib import Path

from daemon.errors import Refusal
from transport.messages import FileInfo, valid_app_name

SUBDIRS = ("bin", "lib", "logs")
LISTED = ("bin", "lib")  # the deployed part of an app
MAX_CACHE = 10_000

HashKey = tuple[int, int, int, int]


class StoreError(Refusal):
    """A store request that cannot be done; the message goes to the master."""


class AppStore:
    """The apps under ``ROOT/apps`` and a sha256 cache of their files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps_dir = root / "apps"
        self._ensured: set[str] = set()  # apps whose directories are known good
        self._hashes: dict[HashKey, str] = {}

    # ------------------------------------------------------------ layout

    def app_dir(self, app: str) -> Path:
        """``ROOT/apps/APP`` for a valid name (StoreError otherwise)."""
        if not valid_app_name(app):
            raise StoreError(f"invalid app name {app!r}")
        return self.apps_dir / app

    def log_path(self, app: str, launch: str) -> Path:
        return self.app_dir(app) / "logs" / f"{launch}.log"

    def ensure(self, app: str) -> Path:
        """Create the app's directories (none of them may be a symlink)."""
        app_dir = self.app_dir(app)
        if app in self._ensured:
            return app_dir  # checked once; `remove` forgets it
        for path in (self.apps_dir, app_dir, *(app_dir / s for s in SUBDIRS)):
            self._mkdir(path)
        self._ensured.add(app)
        return app_dir

    def _mkdir(self, path: Path) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise StoreError(f"refusing {self._rel(path)}: it is {kind}")

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def existing(self, app: str) -> Path:
        """The app dir, which must exist as a real directory."""
        app_dir = self.app_dir(app)
        try:
            st = os.lstat(app_dir)
        except FileNotFoundError:
            raise StoreError(f"no such app: {app}") from None
        if stat.S_ISLNK(st.st_mode):
            raise StoreError(f"refusing {self._rel(app_dir)}: it is a symlink")
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"no such app: {app}")
        return app_dir

    def apps(self) -> list[str]:
        """Names of the apps present (real directories with valid names)."""
        try:
            entries = list(os.scandir(self.apps_dir))
        except OSError:
            return []
        names = (e.name for e in entries if e.is_dir(follow_symlinks=False))
        return sorted(n for n in names if valid_app_name(n))

    # ------------------------------------------------------------ files and hashes

    def files(self, app: str) -> list[FileInfo]:
        """Every file under the app's bin/ and lib/, with its sha256."""
        app_dir = self.existing(app)
        out: list[FileInfo] = []
        for sub in LISTED:
            top = app_dir / sub
            if not top.is_dir() or top.is_symlink():
                continue
            for dirpath, _dirs, names in os.walk(top):  # never descends into links
                for name in sorted(names):
                    info = self._file_info(app_dir, Path(dirpath) / name)
                    if info:
                        out.append(info)
        return sorted(out, key=lambda f: f.path)

    def _file_info(self, app_dir: Path, path: Path) -> FileInfo | None:
        real = self._inside(app_dir, path)
        if real is None:
            return None
        try:
            st = os.stat(real)
            sha = self._sha256(real, st)
        except OSError:
            return None  # removed or replaced while listing
        rel = str(path.relative_to(app_dir))
        return FileInfo(rel, st.st_size, sha, stat.S_IMODE(st.st_mode))

    def hashes(self, app: str, paths: list[str]) -> dict[str, str]:
        """sha256 of each regular file in ``paths`` (relative to the app dir)."""
        app_dir = self.existing(app)
        out: dict[str, str] = {}
        for rel in paths:
            if not rel or "\0" in rel or os.path.isabs(rel) or ".." in Path(rel).parts:
                continue
            real = self._inside(app_dir, app_dir / rel)
            if real is not None:
                with contextlib.suppress(OSError):  # gone meanwhile: absent
                    out[rel] = self._sha256(real, os.stat(real))
        return out

    @staticmethod
    def _inside(app_dir: Path, path: Path) -> Path | None:
        """The resolved regular file at ``path`` if it stays inside ``app_dir``."""
        real = Path(os.path.realpath(path))
        base = os.path.realpath(app_dir)
        if not str(real).startswith(base + os.sep):
            return None
        try:
            return real if stat.S_ISREG(os.stat(real).st_mode) else None
        except OSError:
            return None

    def _sha256(self, path: Path, st: os.stat_result) -> str:
        """Hash ``path``, cached by (device, inode, size, mtime)."""
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(key)
        if cached:
            return cached
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if len(self._hashes) >= MAX_CACHE:
            self._hashes.clear()  # rare; a cold cache only costs a re-hash
        self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    # ------------------------------------------------------------ removal

    def remove(self, app: str, logs: bool) -> list[str]:
        self._ensured.discard(app)
        return self._remove(app, logs)

    def _remove(self, app: str, logs: bool) -> list[str]:
        """Remove bin/ and lib/ (and logs/ and the app dir with ``logs``).

        Returns the removed paths relative to ROOT.  A symlink is unlinked,
        never followed; ``shutil.rmtree`` does not follow links inside.
        """
        app_dir = self.existing(app)
        removed: list[str] = []
        for sub in SUBDIRS if logs else LISTED:
            if self._remove_entry(app_dir / sub):
                removed.append(self._rel(app_dir / sub))
        if logs:
            shutil.rmtree(app_dir)
            removed.append(self._rel(app_dir))
        return removed

    @staticmethod
    def _remove_entry(path: Path) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return True
