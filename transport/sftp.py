"""Push files to one node over paramiko SFTP, atomically and with host keys checked.

`push` takes one SFTP session per call, on a connection of its own or on
one an earlier push or fetch to the same target left open (`Kept`, for
``SshTarget.keep_open`` seconds); the master runs one call per node, each
in its own thread (paramiko blocks).  Every file is written to a
hidden temporary name in its target directory, given its mode, then
renamed over the final name (``posix-rename@openssh.com``), so a transfer
cut short never leaves a half-written file under the name a launch uses.

Host keys are checked against the given known_hosts file.  An unknown key
is refused unless the operator opted in (``trust_unknown``), which records
it; a changed key is always refused.  There is no ``AutoAddPolicy`` here.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import posixpath
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from corral.transport import heap
from corral.transport.lazy import lazy
from corral.transport.messages import UPLOAD_MARK

if TYPE_CHECKING:
    import paramiko
else:
    paramiko = lazy("paramiko")  # imported by the first connection, not by a master's start

# OpenSSH advertises 32 KiB channel packets, so our packets are that size
# anyway; what matters for upload speed is keeping many SFTP writes in
# flight and large reads from the local file.
WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
# OpenSSH's sftp-server takes messages up to 256 KiB; stay under with headroom.
# One local read per write request: paramiko then sends the bytes uncopied.
WRITE_REQUEST = 255 * 1024
TMP_MARK = UPLOAD_MARK  # the worker sweeps what a dead deploy left (PrepareApp)

Progress = Callable[[int, int], None]
# Entered once a push's session is open, around its transfer: a caller's
# limit on how many pushes move bytes at once (see `push`).
Turn = Callable[[], contextlib.AbstractContextManager[object]]

_known_hosts_lock = threading.Lock()

# AES-GCM first: one AEAD pass per packet instead of AES-CTR plus an HMAC.
# On AES-NI with PCLMUL (what cryptography's OpenSSL uses) GCM seals 32 KiB
# packets at about 1.8 GiB/s against 0.8 GiB/s for AES-CTR with HMAC-SHA256,
# and uploads about 1.4x as fast as paramiko's default order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock: object, stall: float = 0.0, **kwargs: object) -> paramiko.Transport:
    """A Transport with our window and packet sizes, GCM ciphers preferred.

    The order is set through paramiko's public `SecurityOptions`, before the
    client starts negotiating; a server without GCM gets the usual order.
    ``stall``: the seconds sent data may stay unacknowledged before the
    kernel gives the connection up (``TCP_USER_TIMEOUT``), since paramiko's
    writer retries a full socket for as long as the connection is open: a
    peer gone silent would hold a push for TCP's many minutes.
    """
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if stall > 0 and user_timeout is not None and isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, int(stall * 1000))
    transport = paramiko.Transport(
        sock,  # type: ignore[arg-type]
        default_window_size=WINDOW_SIZE,
        default_max_packet_size=MAX_PACKET_SIZE,
        **kwargs,  # type: ignore[arg-type]
    )
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = (
        *(c for c in PREFERRED_CIPHERS if c in offered),
        *(c for c in offered if c not in PREFERRED_CIPHERS),
    )
    return transport


class PushError(Exception):
    """A push failed; the message is one line naming the node and the reason."""


class HostKeyError(PushError):
    """The node's host key is unknown (and not trusted) or has changed."""


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to connect, and how to check the node's host key."""

    host: str
    port: int
    user: str
    key_filename: Path | None = None
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    trust_unknown: bool = False
    timeout: float = 15.0  # seconds to connect, log in and open SFTP
    # Seconds a transfer may go without progress (a node gone silent, a cut
    # that drops packets) before it fails, instead of waiting out TCP.
    stall: float = 30.0
    # Seconds a session stays open, idle, for the next push or fetch to the
    # same target (see `Kept`); 0 closes it after each.
    keep_open: float = 60.0

    @property
    def host_id(self) -> str:
        """The host as known_hosts names it: ``host`` or ``[host]:port``."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class Upload:
    """One file to send: ``remote`` is an absolute path on the node."""

    local: Path
    remote: str
    mode: int


@dataclass(frozen=True)
class Sent:
    """One file delivered: its remote path, byte count and transfer time."""

    remote: str
    bytes: int
    seconds: float


@dataclass(frozen=True)
class PushReport:
    """What one `push` delivered to one node."""

    host: str
    files: list[Sent]
    seconds: float

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


# --------------------------------------------------------------------------
# Host keys
# --------------------------------------------------------------------------


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _HostKeyPolicy:
    """Refuse an unknown host key, or record it when the operator opted in.

    paramiko's `MissingHostKeyPolicy` by its one method, not by subclassing:
    a subclass would import paramiko where this module is imported.
    """

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        what = f"{hostname} ({key.get_name()} {fingerprint(key)})"
        if not self.target.trust_unknown:
            raise HostKeyError(
                f"unknown host key for {what}; rerun with --trust-host-key to record it"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        _record(self.target.known_hosts, hostname, key)


def _record(known_hosts: Path, hostname: str, key: paramiko.PKey) -> None:
    """Append one known_hosts line; threads pushing to other nodes may do the same."""
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    with _known_hosts_lock:
        known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)


def _known_lines(known_hosts: Path, hostname: str, key_type: str) -> list[int]:
    """Line numbers of ``known_hosts`` entries for ``hostname`` with this key type."""
    try:
        lines = known_hosts.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) < 3 or line.lstrip().startswith("#") or fields[1] != key_type:
            continue
        for name in fields[0].split(","):
            hashed = name.startswith("|1|")
            if name == hostname or (hashed and paramiko.HostKeys.hash_host(hostname, name) == name):
                found.append(number)
    return found


def _changed_key_error(target: SshTarget, exc: paramiko.BadHostKeyException) -> HostKeyError:
    key = exc.key
    lines = _known_lines(target.known_hosts, target.host_id, key.get_name())
    where = f"{target.known_hosts}:{lines[0]}" if lines else str(target.known_hosts)
    return HostKeyError(
        f"host key for {target.host_id} has CHANGED (now {key.get_name()} {fingerprint(key)}); "
        f"if the node was reinstalled, remove line {where} and rerun with --trust-host-key"
    )


# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------


def _connect(target: SshTarget) -> paramiko.SSHClient:
    heap.keep_large_buffers()  # this process is about to move bulk data (see transport.heap)
    client = paramiko.SSHClient()
    try:
        if target.known_hosts.exists():
            client.load_host_keys(str(target.known_hosts))
        client.set_missing_host_key_policy(
            cast("paramiko.MissingHostKeyPolicy", _HostKeyPolicy(target))
        )
        key = str(target.key_filename) if target.key_filename else None
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            key_filename=key,
            look_for_keys=key is None,
            allow_agent=key is None,
            timeout=target.timeout,
            banner_timeout=target.timeout,
            auth_timeout=target.timeout,
            transport_factory=functools.partial(_transport, stall=target.stall),
        )
    except BaseException as exc:
        client.close()
        raise _connect_error(target, exc) from exc
    return client


@contextlib.contextmanager
def _session(target: SshTarget, keep: bool = True) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session to ``target``: a kept one if `KEPT` holds one that answers,
    else on a new SSH connection.  A session whose work ended without an
    error is kept for the next (``keep`` and ``target.keep_open``); one that
    raised is closed, as its state is unknown."""
    session = KEPT.take(target) if keep else None
    if session is None:
        client = _connect(target)
        try:
            session = _Session(client, _open_sftp(client, target), _stamp(target.known_hosts))
        except BaseException:
            client.close()
            raise
    try:
        yield session.sftp
    except BaseException:
        session.close()
        raise
    if keep and target.keep_open > 0:
        KEPT.give(target, session)
    else:
        session.close()


@dataclass
class _Session:
    """One SSH connection and the SFTP session on it."""

    client: paramiko.SSHClient
    sftp: paramiko.SFTPClient
    known_hosts: tuple[int, ...]  # `_stamp` of the known_hosts file the host key was checked in
    idle_since: float = 0.0

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.sftp.close()  # on a connection already lost: what failed is the news
        self.client.close()

    def answers(self, target: SshTarget) -> bool:
        """Whether the session is still good: its host key was checked in the
        known_hosts file as it is now (an edit there, a key removed or
        changed, is met by a new connection, checked anew), it is connected,
        and its server answers a request within `PROBE_TIMEOUT` s (a node
        gone silent fails it)."""
        if _stamp(target.known_hosts) != self.known_hosts:
            return False
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            return False
        channel = self.sftp.get_channel()
        if channel is None or channel.closed:
            return False
        channel.settimeout(min(PROBE_TIMEOUT, target.stall))
        try:
            self.sftp.normalize(".")
        except (OSError, EOFError, paramiko.SSHException):
            return False
        finally:
            channel.settimeout(target.stall)
        return True


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when ``path`` is edited, replaced or removed."""
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


PROBE_TIMEOUT = 5.0  # seconds a kept session has to answer before a new one is opened
KEEP_PER_TARGET = 2  # idle sessions kept for one target at most
KEEP_MAX = 64  # idle sessions kept in all (the longest idle closed first)


class Kept:
    """Idle SFTP sessions kept open for reuse, as OpenSSH's ControlPersist keeps
    a connection: the next push or fetch to the same target skips the TCP
    connect, key exchange, login and subsystem start (110-170 ms against a
    local sshd, and the node's sshd starting a session process each time).

    Sessions are keyed by the whole `SshTarget`: another user, key, port or
    known_hosts file gets a connection of its own, checked as a new one is.
    A session is handed to one caller at a time.  Before reuse it must
    answer one request (`_Session.answers`); one that does not is closed and
    a new connection made, so a node restarted, cut off or frozen meanwhile
    costs `PROBE_TIMEOUT` at most.  A session idle for ``keep_open`` seconds
    is closed by a reaper thread, which runs only while sessions are kept.
    """

    def __init__(self) -> None:
        self._idle: dict[SshTarget, list[_Session]] = {}
        self._cond = threading.Condition()
        self._reaper: threading.Thread | None = None

    def take(self, target: SshTarget) -> _Session | None:
        """A kept session to ``target`` that answers, or None."""
        while True:
            with self._cond:
                kept = self._idle.get(target)
                if not kept:
                    return None
                session = kept.pop()  # the most recently used
                if not kept:
                    del self._idle[target]
            if session.answers(target):
                return session
            session.close()

    def give(self, target: SshTarget, session: _Session) -> None:
        """Keep ``session`` for ``target.keep_open`` seconds; beyond the limits, close
        the longest idle."""
        session.idle_since = time.monotonic()
        surplus: list[_Session] = []
        with self._cond:
            kept = self._idle.setdefault(target, [])
            kept.append(session)
            surplus += kept[:-KEEP_PER_TARGET]
            del kept[:-KEEP_PER_TARGET]
            while sum(len(v) for v in self._idle.values()) > KEEP_MAX:
                oldest = min(self._idle, key=lambda t: self._idle[t][0].idle_since)
                surplus.append(self._idle[oldest].pop(0))
                if not self._idle[oldest]:
                    del self._idle[oldest]
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="corral-ssh-reaper", daemon=True
                )
                self._reaper.start()
            self._cond.notify()
        for s in surplus:
            s.close()

    def count(self, target: SshTarget | None = None) -> int:
        """Idle sessions kept (for ``target``, or in all)."""
        with self._cond:
            if target is not None:
                return len(self._idle.get(target, ()))
            return sum(len(v) for v in self._idle.values())

    def close_all(self) -> None:
        with self._cond:
            sessions = [s for kept in self._idle.values() for s in kept]
            self._idle.clear()
            self._cond.notify()
        for s in sessions:
            s.close()

    def _reap(self) -> None:
        """Close sessions idle past their target's ``keep_open``; end once none is kept."""
        while True:
            expired: list[_Session] = []
            with self._cond:
                if not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                wake = now + 3600.0
                for target in list(self._idle):
                    kept = self._idle[target]
                    expired += [s for s in kept if now - s.idle_since >= target.keep_open]
                    kept[:] = [s for s in kept if now - s.idle_since < target.keep_open]
                    if not kept:
                        del self._idle[target]
                    else:
                        wake = min(wake, min(s.idle_since for s in kept) + target.keep_open)
                if not expired:
                    self._cond.wait(max(0.0, wake - now))
            for s in expired:
                s.close()


KEPT = Kept()


def _open_sftp(client: paramiko.SSHClient, target: SshTarget) -> paramiko.SFTPClient:
    """SFTP on ``client`` whose every step fails once stuck for ``target.stall`` s.

    As `SSHClient.open_sftp`, but the channel's open waits ``target.timeout``
    at most, and its timeout is set before the SFTP version exchange: a node
    that goes silent then fails the transfer, where paramiko's own waits
    would block until TCP gives up (many minutes).
    """
    transport = client.get_transport()
    try:
        if transport is None:
            raise paramiko.SSHException("not connected")
        channel = transport.open_session(timeout=target.timeout)
        channel.settimeout(target.stall)
        channel.invoke_subsystem("sftp")
        return paramiko.SFTPClient(channel)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise PushError(f"{target.host}: no SFTP subsystem: {_stalled(exc, target)}") from exc


def _stalled(exc: BaseException, target: SshTarget) -> str:
    """``exc`` in words; a timeout says for how long nothing moved."""
    if isinstance(exc, TimeoutError):
        return f"no progress for {target.stall:g} s (the node or the network went silent)"
    if isinstance(exc, EOFError):  # paramiko's word for a connection that is gone
        return (
            f"connection lost (closed by the node, or nothing acknowledged for {target.stall:g} s)"
        )
    return str(exc) or type(exc).__name__


def reach(target: SshTarget) -> None:
    """Connect, check the host key, log in and open SFTP, as a push would; send nothing.

    Raises `PushError` (or `HostKeyError`) as a push to ``target`` would.
    """
    with _session(target, keep=False):  # a new connection: what the next push would meet
        pass


def _check_absolute(remotes: Iterable[str]) -> None:
    for remote in remotes:
        if not posixpath.isabs(remote):
            raise PushError(f"remote path must be absolute: {remote!r}")


def _connect_error(target: SshTarget, exc: BaseException) -> BaseException:
    where = f"{target.user}@{target.host}:{target.port}"
    if isinstance(exc, PushError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return _changed_key_error(target, exc)
    if isinstance(exc, paramiko.AuthenticationException):
        return PushError(f"ssh authentication failed for {where} (key {target.key_filename})")
    if isinstance(exc, (OSError, paramiko.SSHException, EOFError)):
        return PushError(f"cannot reach sshd at {where}: {_why_unreached(exc)}")
    return exc


def _why_unreached(exc: BaseException) -> str:
    """``exc`` in words; paramiko's "[Errno None] Unable to connect" as the causes it holds."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {_why_unreached(e) for e in exc.errors.values()}
        return "; ".join(sorted(causes)) or "no address to connect to"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return exc.strerror.lower() if exc.strerror[1:].islower() else exc.strerror
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


def push(
    target: SshTarget,
    files: list[Upload],
    progress: Progress | None = None,
    turn: Turn | None = None,
) -> PushReport:
    """Send ``files`` to one node; ``progress(done, total)`` is called as bytes go.

    Raises `HostKeyError` for an unknown (untrusted) or changed host key,
    `PushError` for other failures; a file whose transfer failed is left
    under its old content (or absent), never half-written.  With no files
    it returns at once without connecting: an unchanged node costs nothing.
    ``turn()`` is entered once the session is open and held while the
    bytes go: a node slow to answer or to log in holds no place meanwhile.
    """
    start = time.monotonic()
    if not files:
        return PushReport(target.host, [], 0.0)
    _check_absolute(u.remote for u in files)
    total = sum(f.local.stat().st_size for f in files)
    meter = _Meter(total, progress)
    with _session(target) as sftp, turn() if turn else contextlib.nullcontext():
        sent = _send_all(sftp, files, meter, target)
    return PushReport(target.host, sent, time.monotonic() - start)


class _Meter:
    """Counts bytes across all files and reports them to the caller's callback."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def add(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)


def _send_all(
    sftp: paramiko.SFTPClient, files: list[Upload], meter: _Meter, target: SshTarget
) -> list[Sent]:
    made: set[str] = set()
    sent = []
    for upload in files:
        t0 = time.monotonic()
        try:
            _makedirs(sftp, posixpath.dirname(upload.remote), made)
            size = _send_file(sftp, upload, meter)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise PushError(
                f"{target.host}: sending {upload.remote} failed: {_stalled(exc, target)}"
            ) from exc
        sent.append(Sent(upload.remote, size, time.monotonic() - t0))
    return sent


def _makedirs(sftp: paramiko.SFTPClient, directory: str, made: set[str]) -> None:
    """``mkdir -p`` on the node, remembering what this push already checked."""
    if directory in made or directory in ("", "/"):
        return
    try:
        if not stat.S_ISDIR(sftp.stat(directory).st_mode or 0):
            raise PushError(f"remote path is not a directory: {directory}")
    except FileNotFoundError:
        _makedirs(sftp, posixpath.dirname(directory), made)
        sftp.mkdir(directory, 0o755)
    made.add(directory)


def _send_file(sftp: paramiko.SFTPClient, upload: Upload, meter: _Meter) -> int:
    directory, name = posixpath.split(upload.remote)
    tmp = posixpath.join(directory, f".{name}{TMP_MARK}{secrets.token_hex(4)}")
    try:
        size = _write(sftp, upload.local, tmp, meter)
        sftp.chmod(tmp, upload.mode & 0o7777)
        _rename(sftp, tmp, upload.remote)
    except BaseException:
        _remove_quietly(sftp, tmp)
        raise
    return size


def _write(sftp: paramiko.SFTPClient, local: Path, remote: str, meter: _Meter) -> int:
    """Stream ``local`` into ``remote`` with pipelined, large write requests."""
    size = 0
    with local.open("rb") as src, sftp.open(remote, "wb") as dst:
        dst.set_pipelined(True)
        dst.MAX_REQUEST_SIZE = WRITE_REQUEST
        while chunk := src.read(WRITE_REQUEST):
            dst.write(chunk)
            size += len(chunk)
            meter.add(len(chunk))
    return size


def _rename(sftp: paramiko.SFTPClient, tmp: str, final: str) -> None:
    try:
        sftp.posix_rename(tmp, final)
    except OSError as exc:
        if "not supported" not in str(exc).lower():
            raise
        # A server without the OpenSSH extension: plain rename refuses to replace.
        _remove_quietly(sftp, final)
        sftp.rename(tmp, final)


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        sftp.remove(path)


# --------------------------------------------------------------------------
# Sending from several processes (master/pusher.py): the control steps and the ranges
# --------------------------------------------------------------------------


class Control:
    """The control side of a push whose bytes other connections write.

    `open` makes the directories and creates every file empty under its
    hidden temporary name (``tmps``, in the order of the uploads); other
    connections write ranges into them (`write_ranges`); `finish` gives
    each its mode and renames it into place; `close` removes whatever was
    not renamed, so a failed push leaves no half-written file.
    """

    def __init__(self, target: SshTarget, uploads: list[Upload]) -> None:
        self.target = target
        self.uploads = uploads
        self.tmps: list[str] = []
        self.renamed = 0
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def open(cls, target: SshTarget, uploads: list[Upload]) -> Control:
        _check_absolute(u.remote for u in uploads)
        self = cls(target, uploads)
        self._client = _connect(target)
        try:
            self._sftp = _open_sftp(self._client, target)
        except PushError:
            self.close()
            raise
        made: set[str] = set()
        try:
            for upload in uploads:
                directory, name = posixpath.split(upload.remote)
                _makedirs(self._sftp, directory, made)
                tmp = posixpath.join(directory, f".{name}{TMP_MARK}{secrets.token_hex(4)}")
                self._sftp.open(tmp, "wb").close()
                self.tmps.append(tmp)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise PushError(
                f"{target.host}: preparing {upload.remote} failed: {_stalled(exc, target)}"
            ) from exc
        return self

    def finish(self, seconds: float) -> list[Sent]:
        """Mode and rename for every file; what was sent (each took ``seconds``)."""
        assert self._sftp is not None
        sent = []
        for upload, tmp in zip(self.uploads, self.tmps, strict=True):
            try:
                self._sftp.chmod(tmp, upload.mode & 0o7777)
                _rename(self._sftp, tmp, upload.remote)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                why = _stalled(exc, self.target)
                raise PushError(
                    f"{self.target.host}: placing {upload.remote} failed: {why}"
                ) from exc
            self.renamed += 1
            sent.append(Sent(upload.remote, upload.local.stat().st_size, seconds))
        return sent

    def close(self) -> None:
        if self._sftp is not None:
            for tmp in self.tmps[self.renamed :]:
                _remove_quietly(self._sftp, tmp)
            self._sftp.close()
        if self._client is not None:
            self._client.close()


def write_ranges(
    target: SshTarget, writes: list[tuple[Path, str, int, int]], report: Callable[[int], None]
) -> None:
    """Write ``(local, remote, offset, length)`` ranges into files that exist on the node.

    ``report(n)`` is called after every ``n`` bytes handed to SSH.  Raises
    `PushError` (or `HostKeyError`) naming the node.
    """
    with _session(target) as sftp:
        for local, remote, offset, length in writes:
            try:
                _write_range(sftp, local, remote, offset, length, report)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise PushError(
                    f"{target.host}: sending {remote} failed: {_stalled(exc, target)}"
                ) from exc


def _write_range(
    sftp: paramiko.SFTPClient,
    local: Path,
    remote: str,
    offset: int,
    length: int,
    report: Callable[[int], None],
) -> None:
    with local.open("rb") as src, sftp.open(remote, "r+") as dst:
        dst.set_pipelined(True)
        dst.MAX_REQUEST_SIZE = WRITE_REQUEST
        src.seek(offset)
        dst.seek(offset)
        left = length
        while left > 0 and (chunk := src.read(min(WRITE_REQUEST, left))):
            dst.write(chunk)
            left -= len(chunk)
            report(len(chunk))
        if left:
            raise PushError(f"{local} is shorter than when the push began")


# --------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """One file to fetch: ``remote`` (absolute, on the node) into ``local``."""

    remote: str
    local: Path


@dataclass(frozen=True)
class Fetched:
    """One file fetched (``error`` empty), or why it was not."""

    remote: str
    local: Path
    bytes: int = 0
    error: str = ""


def pull(
    target: SshTarget, files: list[Download], progress: Progress | None = None
) -> list[Fetched]:
    """Fetch ``files`` from one node; ``progress(done, total)`` as bytes arrive.

    A remote path that is not a regular file (a symlink, say: it is never
    followed) or that vanished is that file's ``error``; the others still
    come.  Each local file is written under a temporary name and renamed
    into place, so a fetch cut short leaves the last whole copy.  Raises
    `HostKeyError` or `PushError` when the node cannot be reached at all.
    """
    if not files:
        return []
    _check_absolute(f.remote for f in files)
    try:
        with _session(target) as sftp:
            sizes = []
            for f in files:
                try:
                    st = sftp.lstat(f.remote)
                    sizes.append(st.st_size or 0 if stat.S_ISREG(st.st_mode or 0) else -1)
                except OSError:
                    sizes.append(-2)
            meter = _Meter(sum(s for s in sizes if s > 0), progress)
            return [_pull_one(sftp, f, size, meter) for f, size in zip(files, sizes, strict=True)]
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise PushError(f"{target.host}: fetch failed: {_stalled(exc, target)}") from exc


def _pull_one(sftp: paramiko.SFTPClient, f: Download, size: int, meter: _Meter) -> Fetched:
    if size == -1:
        return Fetched(f.remote, f.local, error=f"{f.remote} is not a regular file: not fetched")
    if size == -2:
        return Fetched(f.remote, f.local, error=f"{f.remote} is gone")
    tmp = f.local.with_name(f".{f.local.name}{TMP_MARK}{secrets.token_hex(4)}")
    done = 0
    try:
        f.local.parent.mkdir(parents=True, exist_ok=True)
        with sftp.open(f.remote, "rb") as src, tmp.open("wb") as dst:
            src.prefetch(size)
            while chunk := src.read(WRITE_REQUEST):
                dst.write(chunk)
                done += len(chunk)
                meter.add(len(chunk))
        os.replace(tmp, f.local)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return Fetched(f.remote, f.local, done, error=f"{f.remote}: {exc.strerror or exc}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Fetched(f.remote, f.local, done)
