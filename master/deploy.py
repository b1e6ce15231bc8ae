"""Deploy planning: which files each node needs, given what it already has.

Pure functions over a `DeployPlan` (from `master.elf.resolve`) and, per
node, the sha256 of the node's copies (a worker's ``HashesReply``).  The
master's deploy verb does the I/O around them::

    plan  = elf.resolve(exe, extra_libs)          # may raise DependencyError
    files = local_files(plan)                     # hashed once, for all nodes
    for each node (in its own thread):
        hashes = worker <- Hashes(app, rel_paths(files))
        node   = plan_node(name, files, hashes)
        sftp.push(target, uploads(node, app_dir), progress)
    format_report(node, push_report)

The node's app dir holds ``bin/<executable>`` and ``lib/<soname>``
(DESIGN.md "The worker's disk").
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.master.elf import DeployPlan
from corral.transport.sftp import PushReport, Upload

_HASH_CHUNK = 1024 * 1024


class PlanError(Exception):
    """Two files would land on the same path in the app dir."""


@dataclass(frozen=True)
class LocalFile:
    """One file to deploy: where it is here, where it goes in the app dir."""

    local: Path
    rel: str  # "bin/NAME" or "lib/NAME"
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class NodePlan:
    """What one node needs: files to send and files already identical there."""

    node: str
    send: list[LocalFile]
    unchanged: list[LocalFile]
    bytes_to_send: int

    @property
    def bytes_unchanged(self) -> int:
        return sum(f.size for f in self.unchanged)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (symlinks followed)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_file(path: Path, rel: str) -> LocalFile:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise PlanError(f"{path}: not a regular file")
    return LocalFile(path, rel, st.st_size, stat.S_IMODE(st.st_mode), sha256_file(path))


def local_files(plan: DeployPlan) -> list[LocalFile]:
    """The plan's files with their app-dir paths, sizes, modes and sha256.

    The executable goes to ``bin/`` under its own name, each library to
    ``lib/`` under the name it was found by (the soname the loader asks for).
    Modes are kept (an executable stays 0755).  Hashing happens here, once.
    """
    files = [_local_file(plan.executable, f"bin/{plan.executable.name}")]
    files += [_local_file(lib, f"lib/{lib.name}") for lib in plan.libraries]
    seen: dict[str, Path] = {}
    for f in files:
        if f.rel in seen:
            raise PlanError(f"{f.local} and {seen[f.rel]} would both be deployed as {f.rel}")
        seen[f.rel] = f.local
    return files


def rel_paths(files: Sequence[LocalFile]) -> list[str]:
    """The app-dir paths to ask a worker to hash (``Hashes.paths``)."""
    return [f.rel for f in files]


def plan_node(node: str, files: Sequence[LocalFile], remote: Mapping[str, str]) -> NodePlan:
    """Split ``files`` for one node by its hashes (``rel -> sha256``; absent = missing)."""
    send = [f for f in files if remote.get(f.rel) != f.sha256]
    unchanged = [f for f in files if remote.get(f.rel) == f.sha256]
    return NodePlan(node, send, unchanged, sum(f.size for f in send))


def plan_nodes(
    files: Sequence[LocalFile], remote_by_node: Mapping[str, Mapping[str, str]]
) -> list[NodePlan]:
    """`plan_node` for every node, in the order given."""
    return [plan_node(node, files, remote) for node, remote in remote_by_node.items()]


def uploads(plan: NodePlan, app_dir: str) -> list[Upload]:
    """The SFTP uploads for one node; ``app_dir`` is its absolute ``ROOT/apps/APP``."""
    base = app_dir.rstrip("/")
    return [Upload(f.local, f"{base}/{f.rel}", f.mode) for f in plan.send]


# --------------------------------------------------------------------------
# Text for --dry-run and the final report
# --------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1: '1.5 MiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _summary(plan: NodePlan) -> str:
    return (
        f"{plan.node}: send {len(plan.send)} ({human_bytes(plan.bytes_to_send)}), "
        f"unchanged {len(plan.unchanged)} ({human_bytes(plan.bytes_unchanged)})"
    )


def format_plan(plans: Sequence[NodePlan]) -> str:
    """The ``--dry-run`` text: per node, each file to send or unchanged, with bytes."""
    width = max((len(f.rel) for p in plans for f in (*p.send, *p.unchanged)), default=0)
    lines: list[str] = []
    for plan in plans:
        lines.append(_summary(plan))
        for label, group in (("send", plan.send), ("unchanged", plan.unchanged)):
            for f in group:
                lines.append(f"  {label:<9}  {f.rel:<{width}}  {human_bytes(f.size):>10}")
    return "\n".join(lines)


def format_report(plan: NodePlan, report: PushReport | None) -> str:
    """After a push: per file sent, bytes and seconds; then what was unchanged."""
    lines = [_summary(plan) + (f" in {report.seconds:.2f} s" if report else "")]
    for sent in report.files if report else []:
        rate = sent.bytes / sent.seconds / 2**20 if sent.seconds > 0 else 0.0
        lines.append(
            f"  sent       {sent.remote}  {human_bytes(sent.bytes)}"
            f"  {sent.seconds:.2f} s  {rate:.1f} MiB/s"
        )
    lines += [f"  unchanged  {f.rel}  {human_bytes(f.size)}" for f in plan.unchanged]
    return "\n".join(lines)
