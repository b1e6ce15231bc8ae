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

Reports are written by `master.deploy_report`, from the deploy's result.

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
from corral.transport.sftp import Upload

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
