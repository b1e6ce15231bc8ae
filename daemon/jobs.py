"""A job replica's working directory: its name checked, its files found by glob.

A replica runs in ``ROOT/apps/APP/jobs/ID/INDEX`` (`messages.JOBS_DIR`), a
directory the launch makes (see `AppStore.program`) and the master later
lists with ``JobFiles`` to fetch what the program wrote.  Both take the
directory as a relative path, checked here by `workdir_parts` into single
names that `daemon.beneath` walks without following a symlink.

Globs (`compile_globs`) are relative paths whose parts match one name
each: ``*``, ``?`` and ``[...]`` never cross a ``/``, and a ``**`` part
matches any number of directories (none included), or, last, everything
beneath.  `find_files` walks the directory by fds: a symlink, to a file or
to a directory, is never followed nor listed, and only regular files are.
Blocking: run it in a thread.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import translate

from corral.daemon import beneath
from corral.daemon.errors import Refusal
from corral.transport.messages import JOBS_DIR, JobFile

MAX_WORKDIR_PARTS = 8  # jobs/ID/INDEX, with room to spare
MAX_PATH = 1024  # characters in a working directory or a glob
MAX_NAME = 255  # bytes in one name, as the kernel allows (NAME_MAX)
MAX_GLOBS = 64
MAX_FILES = 10_000  # files listed by one JobFiles
MAX_DEPTH = 64  # directories walked into beneath the working directory (one fd each)
WORKDIR_MODE = 0o700  # jobs/ and what is made beneath it: only the worker's user reads them


class JobError(Refusal):
    """A working directory or a glob refused; the message (one line) goes to the master."""


def workdir_parts(workdir: str) -> tuple[str, ...]:
    """``jobs/7/0`` -> ``("jobs", "7", "0")``; `JobError` says what is wrong with it.

    Relative, at most `MAX_WORKDIR_PARTS` names (printable, none empty,
    ``.`` or ``..``), the first `messages.JOBS_DIR`.
    """
    shown = f"bad working directory {workdir[:200]!r}"
    if not workdir:
        raise JobError(f"{shown}: it is empty")
    if len(workdir) > MAX_PATH or "\0" in workdir:
        raise JobError(f"{shown}: too long or holds a NUL byte")
    if workdir.startswith("/"):
        raise JobError(f"{shown}: it must be relative to the app's directory")
    parts = tuple(workdir.split("/"))
    for part in parts:
        named = beneath.valid_name(part) and part.isprintable()  # no newline in a log line
        if not named or len(os.fsencode(part)) > MAX_NAME:
            raise JobError(f"{shown}: {part!r} is not a directory name")
    if len(parts) > MAX_WORKDIR_PARTS:
        raise JobError(f"{shown}: more than {MAX_WORKDIR_PARTS} levels")
    if parts[0] != JOBS_DIR:
        raise JobError(f"{shown}: it must be inside {JOBS_DIR}/")
    return parts


@dataclass(frozen=True)
class Glob:
    """One glob, as a pattern for each of its parts (None for a ``**`` part)."""

    text: str
    parts: tuple[re.Pattern[str] | None, ...]  # None: a ``**`` part


def compile_globs(globs: Sequence[str]) -> list[Glob]:
    """Check and compile ``globs``; `JobError` for an absolute one or one with a ``..`` part."""
    if len(globs) > MAX_GLOBS:
        raise JobError(f"too many globs: {len(globs)}, at most {MAX_GLOBS}")
    return [_compile(g) for g in globs]


def _compile(glob: str) -> Glob:
    shown = f"bad glob {glob[:200]!r}"
    if not glob or len(glob) > MAX_PATH or "\0" in glob:
        raise JobError(f"{shown}: empty, too long or holding a NUL byte")
    if glob.startswith("/"):
        raise JobError(f"{shown}: it must be relative to the working directory")
    names = [p for p in glob.split("/") if p not in ("", ".")]
    if ".." in names:
        raise JobError(f"{shown}: '..' leads out of the working directory")
    if not names:
        raise JobError(f"{shown}: it names no file")
    parts = tuple(None if p == "**" else re.compile(translate(p)) for p in names)
    return Glob(glob, parts)


States = frozenset[int]


def _closure(glob: Glob, states: set[int]) -> States:
    """``states`` and every state reached past ``**`` parts (which may match no directory)."""
    todo = list(states)
    out = set(states)
    while todo:
        i = todo.pop()
        if i < len(glob.parts) and glob.parts[i] is None and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return frozenset(out)


def start(glob: Glob) -> States:
    """The glob's states before any name: the parts it may match next."""
    return _closure(glob, {0})


def step(glob: Glob, states: States, name: str) -> States:
    """The states after one more name of a path (a directory's, or the file's own)."""
    nxt = set()
    for i in states:
        if i >= len(glob.parts):
            continue
        part = glob.parts[i]
        if part is None:
            nxt.add(i)  # ``**`` takes this name and may take more
        elif part.match(name):
            nxt.add(i + 1)
    return _closure(glob, nxt) if nxt else frozenset()


def matches(glob: Glob, path: str) -> bool:
    """Whether the relative ``path`` (names joined by ``/``) matches ``glob``."""
    states = start(glob)
    for name in path.split("/"):
        states = step(glob, states, name)
    return len(glob.parts) in states


def find_files(dir_fd: int, globs: Sequence[Glob], limit: int = MAX_FILES) -> list[JobFile]:
    """Regular files beneath the directory ``dir_fd`` matching any of ``globs``, by path.

    Walks by fds without following a symlink; a directory no glob can match
    anything in is not entered.  `JobError` past ``limit`` files, or in a
    tree deeper than `MAX_DEPTH` that a glob reaches into.
    """
    found: list[JobFile] = []
    _walk(dir_fd, "", [start(g) for g in globs], globs, found, limit, 0)
    return sorted(found, key=lambda f: f.path)


def _walk(
    fd: int,
    prefix: str,
    states: list[States],
    globs: Sequence[Glob],
    found: list[JobFile],
    limit: int,
    depth: int,
) -> None:
    try:
        with os.scandir(fd) as it:
            entries = list(it)
    except OSError:
        return  # unreadable (or gone): nothing there to list
    for entry in entries:
        name = entry.name
        after = [step(g, s, name) if s else s for g, s in zip(globs, states, strict=True)]
        if not any(after):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISREG(st.st_mode):
            if any(len(g.parts) in s for g, s in zip(globs, after, strict=True)):
                if len(found) >= limit:
                    raise JobError(f"more than {limit} files match; use narrower globs")
                found.append(JobFile(prefix + name, st.st_size))
        elif stat.S_ISDIR(st.st_mode):
            if not any(i < len(g.parts) for g, s in zip(globs, after, strict=True) for i in s):
                continue  # every glob is done: nothing in it can match
            if depth >= MAX_DEPTH:
                raise JobError(f"{prefix + name}: directories nested deeper than {MAX_DEPTH}")
            sub = _open_dir(fd, name)
            if sub < 0:
                continue
            try:
                _walk(sub, f"{prefix}{name}/", after, globs, found, limit, depth + 1)
            finally:
                os.close(sub)
        # a symlink, a FIFO, a socket, a device: never listed


def _open_dir(fd: int, name: str) -> int:
    """``name`` in ``fd`` as a directory, never through a symlink; -1 if it is not one now."""
    try:
        return os.open(name, beneath.DIR_FLAGS | os.O_NONBLOCK, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EACCES):
            return -1  # swapped for a symlink or a file, removed, or unreadable
        raise
