"""The on-disk records in ROOT/run that let processes outlive the daemon.

``<launch>.json`` is written by the daemon when it launches a program;
``<launch>.exit`` by the program's shim when it has reaped it.  Both are
written atomically (temporary file, then rename), so a reader sees a whole
record or none.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class LaunchRecord(msgspec.Struct, omit_defaults=True):
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


class ExitRecord(msgspec.Struct):
    """What the shim learnt from wait4 (written by `daemon.shim`, by hand)."""

    status: int
    utime: float
    stime: float
    maxrss: int  # bytes
    ended_at: float
    base: int = 0  # the shim's own peak RSS: a maxrss at or below it is inherited


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers never see a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_launch(run_dir: Path, rec: LaunchRecord) -> None:
    write_atomic(run_dir / f"{rec.launch}.json", msgspec.json.encode(rec))


def load_launch(path: Path) -> LaunchRecord | None:
    """The record at ``path``; None when it is missing or unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=LaunchRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def load_exit(run_dir: Path, launch: str) -> ExitRecord | None:
    """The shim's exit record for ``launch``, if it wrote one."""
    try:
        data = (run_dir / f"{launch}.exit").read_bytes()
        return msgspec.json.decode(data, type=ExitRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def launch_records(run_dir: Path) -> list[LaunchRecord]:
    """Every readable launch record, oldest launch first."""
    recs = (load_launch(p) for p in sorted(run_dir.glob("*.json")))
    return [r for r in recs if r is not None]


def forget(run_dir: Path, launch: str) -> None:
    """Delete both records of ``launch``."""
    for suffix in (".json", ".exit"):
        (run_dir / f"{launch}{suffix}").unlink(missing_ok=True)
