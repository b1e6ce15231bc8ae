"""Paths beneath ROOT, resolved at the moment they are used.

A program that corral launches can write to ROOT: any directory or file
there may be swapped for a symlink between two uses.  So no path under
ROOT is ever handed to the kernel whole, nor checked once and trusted
later: every open, creation, exec lookup and removal starts from an open
directory fd (ROOT's, held by the daemon) and walks one component at a
time with ``O_NOFOLLOW``, so a symlink on the way is refused (or, for the
files of an app, followed only while it stays inside the app: see
`open_beneath`).

This module is imported by the forker (see `daemon.shim`): it must stay
small, with nothing heavier than `os` imported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corral.daemon.errors import Refusal

# The parts of ROOT (see DESIGN.md, "The worker's disk").
APPS = "apps"
RUN = "run"
LOGS = "logs"

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Reads never block: a FIFO put where a file was expected opens at once.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
MAX_LINKS = 40  # symlinks followed in one resolution, as the kernel allows


class StoreError(Refusal):
    """A store or path request that cannot be done safely; the message goes to the master."""


def walk(base: int, parts: Sequence[str]) -> int:
    """A new fd for the directory ``parts`` beneath ``base``; no component may be a symlink.

    Raw: a symlink or a file on the way raises ``OSError`` (ELOOP or
    ENOTDIR), as the kernel says it.  For messages naming the path, see
    `open_dir`.  ``parts`` are single names (no "/", no ".."), trusted.
    """
    return _descend(base, parts, lambda fd, _i, name: os.open(name, DIR_FLAGS, dir_fd=fd))


def walk_making(base: int, parts: Sequence[str], mode: int) -> int:
    """`walk`, making each directory that is missing (``mode``) on the way.

    A symlink or a file on the way raises ``OSError`` (ELOOP or ENOTDIR),
    as `walk` does: nothing is made through one.
    """

    def step(fd: int, _i: int, name: str) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # made meanwhile: opened below
                os.mkdir(name, mode, dir_fd=fd)
            return os.open(name, DIR_FLAGS, dir_fd=fd)

    return _descend(base, parts, step)


def _descend(base: int, parts: Sequence[str], step: Callable[[int, int, str], int]) -> int:
    """A new fd for ``parts`` beneath ``base``, each opened by ``step(fd, index, name)``.

    Every fd on the way but the last is closed, whatever ``step`` raises.
    """
    fd = base
    try:
        for i, name in enumerate(parts):
            nxt = step(fd, i, name)
            if fd != base:
                os.close(fd)
            fd = nxt
    except BaseException:
        if fd != base:
            os.close(fd)
        raise
    return fd if fd != base else os.dup(base)


def open_dir(
    base: int,
    parts: Sequence[str],
    *,
    where: Sequence[str] = (),
    create: bool = False,
    mode: int = 0o755,
) -> int:
    """A new fd for the real directory ``parts`` beneath ``base``.

    ``where`` is ``base``'s own place under ROOT, for messages.  A symlink
    or a non-directory on the way is a `StoreError` naming it ("refusing
    apps/demo/logs: it is a symlink"); a missing one is FileNotFoundError,
    unless ``create``, which makes it (``mode``) first.
    """

    def step(fd: int, i: int, name: str) -> int:
        nxt = _open_sub(fd, name, create, mode)
        if nxt < 0:
            raise refusal(fd, name, [*where, *parts[: i + 1]])
        return nxt

    return _descend(base, parts, step)


def _open_sub(fd: int, name: str, create: bool, mode: int) -> int:
    """``name`` in ``fd`` as a directory; -1 if it is a symlink or not a directory."""
    if not valid_name(name):
        raise StoreError(f"bad path component {name!r}")
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            return -1
        raise
    with contextlib.suppress(FileExistsError):  # made meanwhile (or a symlink: the open says so)
        os.mkdir(name, mode, dir_fd=fd)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            return -1
        raise


def ensure_dir(base: int, name: str, where: Sequence[str], mode: int = 0o755) -> None:
    """Make sure ``name`` in ``base`` is a real directory, creating it if missing.

    One ``fstatat`` when it is there: cheaper than opening it.
    """
    try:
        st = os.lstat(name, dir_fd=base)
    except FileNotFoundError:
        try:
            os.mkdir(name, mode, dir_fd=base)
            return
        except FileExistsError:
            st = os.lstat(name, dir_fd=base)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"refusing {rel(*where, name)}: it is {_kind(st.st_mode)}")


def refusal(dir_fd: int, name: str, where: Sequence[str]) -> StoreError:
    """The refusal of ``name`` in ``dir_fd`` (at ``where`` under ROOT) as a directory."""
    try:
        kind = _kind(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        kind = "not a directory"
    return StoreError(f"refusing {rel(*where)}: it is {kind}")


def _kind(mode: int) -> str:
    return "a symlink" if stat.S_ISLNK(mode) else "not a directory"


def open_file(
    base: int,
    parts: Sequence[str],
    flags: int = READ_FLAGS,
    mode: int = 0o600,
    *,
    where: Sequence[str] = (),
) -> int:
    """Open the file ``parts`` beneath ``base``: no symlink anywhere, the file included.

    A symlink is a `StoreError` naming it; a missing file or directory is
    FileNotFoundError.
    """
    *dirs, name = parts
    if not valid_name(name):
        raise StoreError(f"bad path component {name!r}")
    dir_fd = open_dir(base, dirs, where=where)
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StoreError(f"refusing {rel(*where, *parts)}: it is a symlink") from None
        raise
    finally:
        os.close(dir_fd)


def open_beneath(
    base: int, path: str, flags: int = READ_FLAGS, *, where: Sequence[str] = ()
) -> tuple[int, list[str]]:
    """Open the file at relative ``path`` inside the directory ``base``, symlinks and all.

    A symlink is followed while it stays inside ``base`` (relative target,
    no ``..`` above ``base``), as ``openat2(RESOLVE_BENEATH)`` would; one
    that leaves it (absolute, or above) is a `StoreError`.  Returns the fd
    (``flags``, the file itself never a symlink) and the names of the
    directories and file walked through: a path to it without symlinks.
    """
    shown = rel(*where, *(p for p in path.split("/") if p != "."))
    outside = f"it leads out of {rel(*where) or 'ROOT'}"
    todo = path.split("/")[::-1]  # components left, the next one last
    stack: list[tuple[int, str]] = []  # directories entered beneath base
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not stack:
                    raise StoreError(f"refusing {shown}: {outside}")
                os.close(stack.pop()[0])
                continue
            here = stack[-1][0] if stack else base
            last = not any(n not in ("", ".") for n in todo)
            fd = _open_step(here, name, flags if last else DIR_FLAGS, last)
            if fd >= 0 and last:
                return fd, [n for _, n in stack] + [name]
            if fd >= 0:
                stack.append((fd, name))
                continue
            links += 1  # a symlink (or a file where a directory should be)
            todo.extend(_link(here, name, links, shown, outside))
        raise StoreError(f"refusing {shown}: not a file")
    finally:
        for fd, _ in stack:
            os.close(fd)


def _link(dir_fd: int, name: str, links: int, shown: str, outside: str) -> list[str]:
    """The components of symlink ``name`` (the ``links``-th followed), the next one last.

    StoreError if it is no symlink (a file where a directory should be)
    or leads out (absolute); ELOOP past `MAX_LINKS`.
    """
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        raise StoreError(f"refusing {shown}: {name} is not a directory") from None
    if links > MAX_LINKS:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), shown)
    if target.startswith("/"):
        raise StoreError(f"refusing {shown}: {outside} (a symlink to {target})")
    return target.split("/")[::-1]


def _open_step(dir_fd: int, name: str, flags: int, last: bool) -> int:
    """Open one component without following it; -1 if it is a symlink or not a directory."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) or (e.errno == errno.EISDIR and last):
            return -1
        raise
    if last and flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)  # O_PATH | O_NOFOLLOW opens the link itself
        return -1
    return fd


def remove(base: int, name: str) -> bool:
    """Remove ``name`` in ``base``: a tree, a file or a symlink, never followed.

    False if there was nothing to remove.
    """
    import shutil  # not at the top: the forker imports this module

    try:
        st = os.lstat(name, dir_fd=base)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        # With dir_fd, rmtree walks by fds and never follows a symlink.
        shutil.rmtree(name, dir_fd=base)
    else:
        os.unlink(name, dir_fd=base)
    return True


def write_atomic(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``name`` in ``dir_fd`` so readers never see a partial file (``mode``, new)."""
    tmp = name + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        os.unlink(tmp, dir_fd=dir_fd)  # a symlink where our temporary goes: ours to remove
        fd = os.open(tmp, flags | os.O_EXCL, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def valid_name(name: str) -> bool:
    """One path component: not empty, no "/", no NUL, not "." or ".."."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def rel(*parts: str) -> str:
    """``parts`` joined as a path relative to ROOT, for messages."""
    return "/".join(p for p in parts if p)


@dataclass(frozen=True)
class Beneath:
    """A file at ``parts`` beneath the directory ``base``, walked again at every open.

    Not a path: nothing here hands the whole path to the kernel (there is
    no ``__fspath__``), so a symlink swapped in is never followed.
    """

    base: int
    parts: tuple[str, ...]

    def open(self, flags: int = READ_FLAGS, mode: int = 0o600) -> int:
        """An fd for the file (see `open_file`): StoreError for a symlink, else OSError."""
        return open_file(self.base, self.parts, flags, mode)

    def open_regular(self) -> int:
        """Open it for reading; StoreError unless it is a regular file."""
        fd = self.open()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"refusing {self}: it is not a regular file")
        return fd

    def __str__(self) -> str:
        return rel(*self.parts)
