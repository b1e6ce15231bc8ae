"""The on-disk records in ROOT/run that let processes outlive the daemon.

``<launch>.json`` (`LaunchRecord`) is written by the program's shim once
the program is execed (and by the daemon when it marks it unknown);
``<launch>.exit`` (`ExitRecord`) by the shim when it has reaped it.  Both
sides build them here and write them with `save_launch` and `save_exit`:
atomically (temporary file, then rename, see `beneath.write_atomic`), so a
reader sees a whole record or none; created 0600, and reached from ROOT's
fd without following a symlink (see `daemon.beneath`).

The shim imports this module, and the forker with it (see `daemon.shim`):
nothing heavier than `json` at the top.  Reading validates with msgspec,
imported by the readers, which only the daemon calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from corral.daemon import beneath

if TYPE_CHECKING:
    from pathlib import Path

    from corral.daemon.shim import Spec

T = TypeVar("T")
MAX_RECORD = 4 << 20  # bytes: argv included, a record stays far below


@dataclass
class LaunchRecord:
    """What the daemon knows about one launch, enough to re-adopt it."""

    launch: str
    pid: int
    shim: int
    shim_start: int  # shim's start time in clock ticks: guards against pid reuse
    app: str
    argv: list[str]
    started_at: float
    start: int  # app's start time in clock ticks (/proc/PID/stat field 22)
    boot_id: str
    unknown_at: float | None = None  # set once the end was found unrecorded
    key: str = ""  # the launch's request key (Launch.key); "" in records older than jobs


@dataclass
class ExitRecord:
    """What the shim learnt from wait4."""

    status: int
    utime: float
    stime: float
    maxrss: int  # bytes
    ended_at: float
    base: int = 0  # the shim's own peak RSS: a maxrss at or below it is inherited


def launch_record(spec: Spec, shim: tuple[int, int], seed: tuple[int, int]) -> LaunchRecord:
    """The record of ``spec`` launched by ``shim`` as ``seed`` (each: pid, start ticks).

    The daemon makes it when it hands the spec over, the shim when it
    writes it: the same record either way.
    """
    return LaunchRecord(
        launch=spec.launch,
        pid=seed[0],
        shim=shim[0],
        shim_start=shim[1],
        app=spec.app,
        argv=spec.argv,
        started_at=spec.started_at,
        start=seed[1],
        boot_id=spec.boot_id,
        key=spec.key,
    )


def encode(rec: LaunchRecord | ExitRecord) -> bytes:
    """A record as its file holds it: JSON, fields that are None left out."""
    return json.dumps({k: v for k, v in vars(rec).items() if v is not None}).encode()


class RunDir:
    """``ROOT/run``, walked from ROOT's fd at every use (see `daemon.beneath`).

    Never held open: a ``run`` swapped for a symlink (or moved out of
    ROOT) is refused, or missed, at the next use, never written through.
    """

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd

    def create(self) -> None:
        """Make ``ROOT/run`` (mode 0700) if missing; StoreError if it is a symlink."""
        os.close(self.open(create=True))

    def open(self, create: bool = False) -> int:
        """A new fd for it: StoreError if it is a symlink, FileNotFoundError if missing."""
        return beneath.open_dir(self.root_fd, [beneath.RUN], create=create, mode=0o700)


if TYPE_CHECKING:
    Run = RunDir | Path  # a Path (tests, tools) is opened as it is, symlinks and all


@contextlib.contextmanager
def _opened(run: Run, create: bool = False) -> Iterator[int]:
    """An fd for the run directory; ``create`` makes a RunDir that went missing again."""
    if isinstance(run, RunDir):
        fd = run.open(create)
    else:
        fd = os.open(run, beneath.DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def save_launch(run: Run, rec: LaunchRecord) -> None:
    """Write ``<launch>.json`` (mode 0600)."""
    with _opened(run, create=True) as fd:
        beneath.write_atomic(fd, f"{rec.launch}.json", encode(rec))


def save_exit(run: Run, launch: str, ex: ExitRecord) -> None:
    """Write ``<launch>.exit`` (mode 0600)."""
    with _opened(run, create=True) as fd:
        beneath.write_atomic(fd, f"{launch}.exit", encode(ex))


def load_launch(path: Path) -> LaunchRecord | None:
    """The record at ``path``; None when it is missing or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _decode(data, LaunchRecord)


def _read(dir_fd: int, name: str) -> bytes | None:
    """A regular file's bytes (never through a symlink); None if there is none."""
    try:
        fd = os.open(name, beneath.READ_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD:
            return None
        return os.pread(fd, st.st_size, 0)  # replaced whole, never rewritten
    finally:
        os.close(fd)


def _decode(data: bytes | None, kind: type[T]) -> T | None:
    """``data`` as a ``kind``, its fields' types checked; None if it is not one."""
    import msgspec  # not at the top: the forker imports this module

    if data is None:
        return None
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def load_exit(run: Run, launch: str) -> ExitRecord | None:
    """The shim's exit record for ``launch``, if it wrote one."""
    try:
        with _opened(run) as fd:
            return _decode(_read(fd, f"{launch}.exit"), ExitRecord)
    except (OSError, beneath.StoreError):
        return None


def exists(run: Run, launch: str) -> bool:
    """Whether ``<launch>.json`` is there (a symlink counts: the name is taken).

    Asked before each launch: a ``run`` gone missing is made again, one
    that is a symlink is a StoreError (the launch is refused).
    """
    with _opened(run, create=True) as fd:
        try:
            os.lstat(f"{launch}.json", dir_fd=fd)
        except FileNotFoundError:
            return False
    return True


def launch_records(run: Run) -> list[LaunchRecord]:
    """Every readable launch record, oldest launch first.

    A missing ``run`` has none; one that is a symlink is a StoreError.
    """
    try:
        with _opened(run) as fd:
            names = sorted(n for n in os.listdir(fd) if n.endswith(".json"))
            recs = (_decode(_read(fd, n), LaunchRecord) for n in names)
            return [r for r in recs if r is not None]
    except FileNotFoundError:
        return []


def forget(run: Run, launch: str) -> None:
    """Delete both records of ``launch``; best effort (a ``run`` refused has none of ours)."""
    with contextlib.suppress(OSError, beneath.StoreError), _opened(run) as fd:
        for suffix in (".json", ".exit"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{launch}{suffix}", dir_fd=fd)
