"""Unpack a job's bundle into a replica's working directory, treating it as hostile.

A bundle is a tar (plain, gzip, bzip2, xz or zstd) or a zip archive.  It
comes from the operator, but it is unpacked on every node that runs a
replica, so nothing in it may reach outside the directory it is unpacked
into, nor fill the disk:

- a member with an absolute name or a ``..`` part is refused, and so is
  one that walks through a symlink (every directory on its way is opened
  by fd with ``O_NOFOLLOW``, never by path);
- a symlink or hard link must point inside (tarfile's ``data`` filter
  checks tar members; a hard link must name a regular file unpacked
  before it); devices, FIFOs and sockets are refused;
- at most `Limits.files` members and `Limits.bytes` bytes: a member whose
  declared size would pass the limit is refused before a byte of it is
  written, and the bytes actually written are counted too (a zip may
  lie about its sizes).

A refusal is an `UnpackError` whose message is one line naming the member.
Modes are those of the ``data`` filter (no set-uid, no group or world
write); regular files keep their mtime, so ``make`` sees sources older
than what it builds.  Blocking: run it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from corral.daemon.errors import Refusal
from corral.transport.archives import kind

MAX_FILES = 10_000
MAX_BYTES = 2 << 30
CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_TAR_MODES = {"tar": "r|", "tar.gz": "r|gz", "tar.bz2": "r|bz2", "tar.xz": "r|xz"}


class UnpackError(Refusal):
    """A bundle refused; one line, naming the member when one is to blame."""


@dataclass(frozen=True)
class Limits:
    files: int = MAX_FILES
    bytes: int = MAX_BYTES


@dataclass(frozen=True)
class Unpacked:
    files: int  # members unpacked (directories included)
    bytes: int  # bytes written


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _shown(name: str) -> str:
    return repr(name[:200])


def split_name(name: str) -> list[str]:
    """A member's name as directory names; `UnpackError` for an absolute one or a ``..``."""
    if not name or "\0" in name:
        raise UnpackError(f"member {_shown(name)}: empty name or NUL byte: refused")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnpackError(f"member {_shown(name)}: absolute path: refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"member {_shown(name)}: '..' leads out of the working directory")
    for p in parts:
        if len(os.fsencode(p)) > 255:
            raise UnpackError(f"member {_shown(name)}: a name longer than 255 bytes")
    return parts


class _Writer:
    """Writes members beneath ``root`` (an fd), by fds, never following a symlink."""

    def __init__(self, root: int, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.members = 0
        self.bytes = 0
        self.regular: set[tuple[str, ...]] = set()
        self.times: list[tuple[tuple[str, ...], float]] = []

    def count(self, name: str, size: int) -> None:
        self.members += 1
        if self.members > self.limits.files:
            raise UnpackError(
                f"member {_shown(name)}: more than {self.limits.files} members: refused"
            )
        if size > 0 and self.bytes + size > self.limits.bytes:
            raise UnpackError(
                f"member {_shown(name)}: unpacks past {_size(self.limits.bytes)} "
                f"({_size(size)} more after {_size(self.bytes)}): refused"
            )

    def _parent(self, name: str, parts: list[str], create: bool = True) -> int:
        """A new fd for the directory holding ``parts[-1]``, made as needed."""
        fd = os.dup(self.root)
        try:
            for i, part in enumerate(parts[:-1]):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    sub = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = "/".join(parts[: i + 1])
                        raise UnpackError(
                            f"member {_shown(name)}: goes through {where!r}, "
                            "a symlink or a file: refused"
                        ) from None
                    raise
                os.close(fd)
                fd = sub
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _clear(self, fd: int, leaf: str, name: str) -> None:
        """Make room for ``leaf``: a file or link of that name goes (a later member wins)."""
        try:
            st = os.lstat(leaf, dir_fd=fd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnpackError(f"member {_shown(name)}: a directory of that name is there already")
        os.unlink(leaf, dir_fd=fd)

    def directory(self, name: str, parts: list[str], mode: int) -> None:
        if not parts:
            return
        fd = self._parent(name, parts)
        try:
            try:
                os.mkdir(parts[-1], mode & 0o755 | 0o700, dir_fd=fd)
            except FileExistsError:
                st = os.lstat(parts[-1], dir_fd=fd)
                if not stat.S_ISDIR(st.st_mode):
                    raise UnpackError(
                        f"member {_shown(name)}: a file or symlink of that name is there already"
                    ) from None
        finally:
            os.close(fd)

    def file(
        self,
        name: str,
        parts: list[str],
        mode: int,
        mtime: float,
        src: IO[bytes],
        size: int,
        at: tuple[int, int] | None = None,
    ) -> None:
        """A regular file from ``src``, or with ``at`` (fd, offset) copied by the kernel
        from that place of a plain tar (``copy_file_range``: no copy through us)."""
        if not parts:
            raise UnpackError(f"member {_shown(name)}: a file without a name")
        fd = self._parent(name, parts)
        try:
            self._clear(fd, parts[-1], name)
            out = os.open(parts[-1], FILE_FLAGS, mode & 0o755 | 0o600, dir_fd=fd)
            try:
                written = 0
                if at is not None:
                    written = _copy_range(at[0], at[1], out, size)
                    if written != size:
                        raise UnpackError(f"member {_shown(name)}: the bundle ends inside it")
                while at is None and (chunk := src.read(CHUNK)):
                    written += len(chunk)
                    if written > size or self.bytes + written > self.limits.bytes:
                        raise UnpackError(
                            f"member {_shown(name)}: holds more than it declares or "
                            f"unpacks past {_size(self.limits.bytes)}: refused"
                        )
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
                os.utime(out, (mtime, mtime))
            finally:
                os.close(out)
            self.bytes += written
        finally:
            os.close(fd)
        self.regular.add(tuple(parts))

    def symlink(self, name: str, parts: list[str], target: str) -> None:
        if not parts:
            raise UnpackError(f"member {_shown(name)}: a symlink without a name")
        fd = self._parent(name, parts)
        try:
            self._clear(fd, parts[-1], name)
            os.symlink(target, parts[-1], dir_fd=fd)
        finally:
            os.close(fd)

    def hardlink(self, name: str, parts: list[str], target: str) -> None:
        to = split_name(target)
        if tuple(to) not in self.regular:
            raise UnpackError(
                f"member {_shown(name)}: hard link to {_shown(target)}, "
                "not a file of this bundle: refused"
            )
        src = self._parent(name, to, create=False)
        try:
            dst = self._parent(name, parts)
            try:
                self._clear(dst, parts[-1], name)
                os.link(to[-1], parts[-1], src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.regular.add(tuple(parts))


def unpack(archive: str | os.PathLike[str], dest: int, limits: Limits = Limits()) -> Unpacked:
    """Unpack the archive at ``archive`` beneath the directory open at ``dest``.

    `UnpackError` (one line) if it is refused; what was written before the
    refusal stays beneath ``dest`` (the caller unpacks into a fresh directory
    and removes it).
    """
    with open(archive, "rb") as f:
        head = f.read(512)
        what = kind(head)
        if what is None:
            raise UnpackError("the bundle is not a tar, tar.gz, tar.bz2, tar.xz, tar.zst or zip")
        f.seek(0)
        writer = _Writer(dest, limits)
        try:
            if what == "zip":
                _zip(f, writer)
            else:
                _tar(f, what, writer)
        except UnpackError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as e:
            raise UnpackError(f"the bundle is damaged: {_line(e)}") from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UnpackError(f"no room left to unpack the bundle: {e.strerror}") from None
            if isinstance(e, (IsADirectoryError, FileExistsError, NotADirectoryError)):
                raise UnpackError(f"the bundle cannot be unpacked: {_line(e)}") from None
            if not e.errno:  # a decompressor's own error ("not a gzipped file", ...)
                raise UnpackError(f"the bundle is damaged: {_line(e)}") from None
            raise
    return Unpacked(writer.members, writer.bytes)


def _copy_range(src: int, offset: int, out: int, size: int) -> int:
    """Copy ``size`` bytes at ``offset`` of ``src`` into ``out``; the bytes copied."""
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src, out, size - done, offset + done)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = os.sendfile(out, src, offset + done, size - done)  # another file system
        if n == 0:
            break
        done += n
    return done


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _tar_members(f: IO[bytes], what: str) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    if what == "tar":  # seekable: members' data is copied by the kernel from its offset
        tf = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 (closed by the with below)
    elif what == "tar.zst":
        import zstandard

        reader: Any = zstandard.ZstdDecompressor().stream_reader(f, closefd=False)
        tf = tarfile.open(fileobj=reader, mode="r|")  # noqa: SIM115 (closed by the with below)
    else:
        mode: Any = _TAR_MODES[what]
        tf = tarfile.open(fileobj=f, mode=mode)  # noqa: SIM115
    with tf:
        for member in tf:
            yield tf, member


def _tar(f: IO[bytes], what: str, w: _Writer) -> None:
    dest = os.path.realpath(f"/proc/self/fd/{w.root}")
    plain = what == "tar"
    for tf, member in _tar_members(f, what):
        name = member.name
        w.count(name, member.size if member.isreg() else 0)
        parts = split_name(name)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            what_kind = "a device" if member.ischr() or member.isblk() else "a FIFO or special file"
            raise UnpackError(f"member {_shown(name)}: {what_kind}: refused")
        try:
            safe = tarfile.data_filter(member, dest)
        except tarfile.FilterError as e:
            raise UnpackError(f"member {_shown(name)}: {_line(e)}") from None
        mode = safe.mode if safe.mode is not None else 0o644
        if member.isdir():
            w.directory(name, parts, mode)
        elif member.issym():
            w.symlink(name, parts, member.linkname)
        elif member.islnk():
            w.hardlink(name, parts, member.linkname)
        else:
            src = tf.extractfile(member)
            assert src is not None
            at = (f.fileno(), member.offset_data) if plain and not member.sparse else None
            w.file(name, parts, mode, float(member.mtime), src, member.size, at)


def _zip(f: IO[bytes], w: _Writer) -> None:
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        for info in infos:
            name = info.filename
            w.count(name, 0 if info.is_dir() else info.file_size)
            parts = split_name(name)
            unix = info.external_attr >> 16
            kind_bits = stat.S_IFMT(unix)
            if info.is_dir():
                w.directory(name, parts, 0o755)
                continue
            if kind_bits and not stat.S_ISREG(kind_bits):
                what_kind = "a symlink" if stat.S_ISLNK(kind_bits) else "a special file"
                raise UnpackError(f"member {_shown(name)}: {what_kind} in a zip: refused")
            mode = stat.S_IMODE(unix) if unix else 0o644
            mtime = _zip_time(info)
            with zf.open(info) as src:
                w.file(name, parts, mode, mtime, src, info.file_size)


def _zip_time(info: zipfile.ZipInfo) -> float:
    import time

    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return time.time()
