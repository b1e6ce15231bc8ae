"""Job bundles on the master: taken in at submit, sent once per node, unpacked per replica.

``submit --bundle PATH`` takes a tar (plain, gz, bz2, xz, zst) or zip file,
or a directory (made into a plain tar), and keeps it in the master's state
directory as ``STATE_DIR/bundles/SHA256`` (`take`): hashed once, while it
is copied, so a queued job can start after a master restart and a file
changed after the submit changes nothing.

When a replica is placed (`Sender`), its node is asked whether it holds
that sha256 (``BundleHave``); if not it is sent over SFTP with deploy's SSH
settings and host-key rules (a temporary name renamed into place) and the
worker checks its hash (``BundleCommit``).  Replicas of one job on one
node share one send; a node that holds it already is sent nothing, and
one known to hold it (it said so, or took it, since it registered) is not
even asked.

At most `SENDS_AT_ONCE` nodes are sent bytes at a time (`Turns`), the
others waiting their turn in the order their SFTP sessions opened (a node
slow to connect holds no place meanwhile).  Every SFTP stream
of the master goes through paramiko's packet loop in this one process,
one core's worth whatever the cores (the GIL): four streams at once move
no more bytes a second than two, they only make every node finish at the
end, together, and spend more CPU switching between threads.  Two at a
time keep both the loop and the links busy (two 1 GbE links already
carry what the loop makes), and the first nodes unpack and start their
replicas while the next are sent.  Measured with `bench bundle` (100 MB
to 4 nodes on one 2-core machine, medians of 3): 2.3-2.5 s with every
node at once, 2.0-2.1 s two at a time, 2.5-3.4 s one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import secrets
import tarfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from corral.master.config import ConfigError, SshConfig, load_ssh
from corral.master.errors import VerbError
from corral.master.job_report import SEND_WAITING
from corral.master.server import WorkerLink
from corral.master.ssh import dead_upload_idle, on_loop, thread_progress
from corral.master.ssh import target as ssh_target
from corral.transport import archives, sftp
from corral.transport.messages import BundleAt, BundleCommit, BundleHave

if TYPE_CHECKING:
    from corral.master.control import Master

BUNDLES_DIR = "bundles"
CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.1
MiB = 1 << 20
NOT_HERE = "is not on this node"  # the worker's refusal of an unpack without its bundle
COMMIT_PER_MIB = 0.05  # seconds a worker may take to hash a MiB (at least 30 s in all)
SENDS_AT_ONCE = 2  # nodes sent a bundle at the same time (see the module's docstring)
WAITING_TURN = f"{SEND_WAITING}: {SENDS_AT_ONCE} nodes are sent to at a time"


@dataclass(frozen=True)
class Bundle:
    sha256: str
    bytes: int
    kind: str
    name: str  # what the operator gave, for the ticket


class _Hashing:
    """A file-like sink that hashes and counts what is written to it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def take(state_dir: Path, path: str | Path) -> Bundle:
    """Copy ``path`` into ``STATE_DIR/bundles/SHA256``; VerbError (one line) if it cannot be one.

    Blocking: run it in a thread.
    """
    src = Path(path).expanduser().absolute()
    if not src.exists():
        raise VerbError(f"bad --bundle {src}: no such file or directory")
    home = state_dir / BUNDLES_DIR
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = home / f".incoming-{secrets.token_hex(6)}"
    try:
        with tmp.open("xb") as out:
            sink = _Hashing(out)
            if src.is_dir():
                what = "tar"
                _tar_dir(src, sink)
            elif src.is_file():
                what = _copy(src, sink)
            else:
                raise VerbError(f"bad --bundle {src}: not a file or a directory")
        sha = sink.sha.hexdigest()
        final = home / sha
        os.replace(tmp, final)  # the same content: replacing it changes nothing
    except OSError as e:
        raise VerbError(f"bad --bundle {src}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return Bundle(sha, sink.size, what, src.name)


def _copy(src: Path, sink: _Hashing) -> str:
    with src.open("rb") as f:
        head = f.read(archives.HEAD)
        what = archives.kind(head)
        if what is None:
            raise VerbError(
                f"bad --bundle {src}: not a tar, tar.gz, tar.zst or zip file (nor a directory)"
            )
        sink.write(head)
        while block := f.read(CHUNK):
            sink.write(block)
    return what


def _tar_dir(src: Path, sink: _Hashing) -> None:
    """``src``'s contents as a plain tar stream (names relative to it, symlinks kept as such)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for child in sorted(src.iterdir()):
            tf.add(child, arcname=child.name, recursive=True, filter=clean)


def local_path(state_dir: Path, sha: str) -> Path:
    return state_dir / BUNDLES_DIR / sha


def forget(state_dir: Path, sha: str) -> None:
    """The master's copy of a bundle no open job uses any more."""
    local_path(state_dir, sha).unlink(missing_ok=True)


def ssh_config(master: Master) -> SshConfig:
    if master.config.ssh is not None:
        return master.config.ssh
    try:
        return load_ssh(master.config.state_dir)
    except ConfigError as e:
        raise VerbError(str(e)) from None


# progress(done, total) of one node's send, on the loop
SendProgress = Callable[[int, int], None]


class Turns:
    """``places`` pushes move bytes at once; the others wait in the order they came.

    Taken in a push's thread once its node's session is open (`sftp.push`'s
    ``turn``): a node slow to answer holds no place while it connects.
    """

    def __init__(self, places: int) -> None:
        self._places = threading.Semaphore(places)  # wakes its waiters first come, first served
        self._closed = False

    def close(self) -> None:
        """The master is stopping: a push still waiting for its turn fails instead."""
        self._closed = True

    @contextlib.contextmanager
    def take(self, waiting: Callable[[bool], None]) -> Iterator[None]:
        """Hold a place; ``waiting(True)`` first if there is none free, ``waiting(False)``
        once there is."""
        if not self._places.acquire(blocking=False):
            waiting(True)
            while not self._places.acquire(timeout=0.5):
                if self._closed:
                    raise sftp.PushError("not sent: the master is stopping")
            waiting(False)
        try:
            if self._closed:
                raise sftp.PushError("not sent: the master is stopping")
            yield
        finally:
            self._places.release()


@dataclass
class Send:
    """One bundle going to one node; the replicas placed there wait for it together."""

    node: str
    sha256: str
    watchers: list[SendProgress] = field(default_factory=list)
    task: asyncio.Future[int] | None = None  # bytes sent (0: the node had it)
    seconds: float = 0.0
    waiting: bool = False  # for its turn: `SENDS_AT_ONCE` other sends are under way

    def tell(self, node: str, done: int, total: int) -> None:
        for watch in list(self.watchers):
            watch(done, total)


class Sender:
    """Sends bundles to nodes for `Jobs`: one send per node and bundle at a time."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.sends: dict[tuple[str, str], Send] = {}
        self.sent_bytes: dict[str, int] = {}  # node -> bundle bytes sent since the start
        # Bundles each node said it holds, or took, over its connection (a
        # worker that registers again is asked anew): a resubmit asks
        # nothing.  A node that no longer has one refuses the unpack
        # (`NOT_HERE`); `Jobs` then forgets it and sends it again.
        self.held: weakref.WeakKeyDictionary[WorkerLink, set[str]] = weakref.WeakKeyDictionary()
        self.turns = Turns(SENDS_AT_ONCE)

    def forget(self, link: WorkerLink, sha: str) -> None:
        self.held.get(link, set()).discard(sha)

    def send(self, node: str, link: WorkerLink, sha: str, watch: SendProgress) -> Send:
        """The send of ``sha`` to ``node``: the one in flight, or a new one."""
        key = (node, sha)
        send = self.sends.get(key)
        if sha in self.held.get(link, ()) and send is None:
            send = Send(node, sha)  # held: nothing to ask, nothing to send
            send.task = asyncio.get_running_loop().create_future()
            send.task.set_result(0)
        elif send is None or send.task is None or send.task.done():
            send = Send(node, sha)
            send.task = asyncio.ensure_future(self._run(send, link))
            self.sends[key] = send
            send.task.add_done_callback(lambda _t: self._done(key, send))
        send.watchers.append(watch)
        return send

    def close(self) -> None:
        """Stop the sends in flight (the master is stopping)."""
        self.turns.close()
        for send in list(self.sends.values()):
            if send.task is not None:
                send.task.cancel()

    def _waiting(self, send: Send, now: bool, total: int) -> None:  # on the loop
        send.waiting = now
        send.tell(send.node, 0, total)

    def _done(self, key: tuple[str, str], send: Send) -> None:
        if send.task is not None and not send.task.cancelled():
            send.task.exception()  # read: the replicas waiting on it have said why
        if self.sends.get(key) is send:
            del self.sends[key]

    async def _run(self, send: Send, link: WorkerLink) -> int:
        t0 = time.monotonic()
        sha = send.sha256
        local = local_path(self.master.config.state_dir, sha)
        if not local.is_file():
            raise VerbError(f"the master lost its copy of bundle {sha[:12]} ({local})")
        ssh = ssh_config(self.master)
        idle = dead_upload_idle(ssh)
        have = await link.call(lambda i: BundleHave(id=i, sha256=sha, idle=idle), BundleAt)
        if have.present:
            self.held.setdefault(link, set()).add(sha)
            send.seconds = time.monotonic() - t0
            size = local.stat().st_size
            send.tell(send.node, size, size)
            return 0
        view = self.master.cluster.node(send.node)
        target = ssh_target(view, ssh, ssh.trust_unknown_host_keys)
        upload = sftp.Upload(local, have.path, 0o600)
        hop = thread_progress(send.tell, send.node, PROGRESS_INTERVAL)
        waiting = on_loop(functools.partial(self._waiting, send, total=local.stat().st_size))
        turn = functools.partial(self.turns.take, waiting)
        report = await asyncio.to_thread(sftp.push, target, [upload], hop, turn)
        size = report.bytes
        timeout = max(30.0, size / MiB * COMMIT_PER_MIB)
        await link.call(lambda i: BundleCommit(id=i, sha256=sha), BundleAt, timeout)
        self.sent_bytes[send.node] = self.sent_bytes.get(send.node, 0) + size
        self.held.setdefault(link, set()).add(sha)
        send.seconds = time.monotonic() - t0
        return size


def error_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
