"""Every message that crosses the master <-> worker channel.

All messages are msgspec Structs in one tagged union (`Message`); the tag is
the class name.  Requests carry an ``id`` that their reply echoes; events
(``ProcEvent``, ``LogChunk``, ``Heartbeat``) are unsolicited.

All of it runs inside TLS 1.3 (see ``transport.tls``).  Enrollment, on a
connection without a client certificate that offered the enroll ALPN::

    worker -> master   Enroll(version, name, nonce, csr)
    master -> worker   Challenge(version, nonce, proof=b"")  or Refused
    worker -> master   Auth(proof)            token HMAC over both nonces and the CSR
    master -> worker   Enrolled(cert, ca, proof)             or Refused, then close

where ``Enrolled.proof`` is the master's token HMAC over both nonces and the
two certificates: the worker trusts the CA it is handed only with it.  The
channel, on a connection whose client certificate names the node::

    worker -> master   Hello(version, name, nonce)           name: the certificate's
    master -> worker   Welcome(heartbeat, now, beat_window)  or Refused
    worker -> master   Register(facts, procs, apps)          full state

after which heartbeats, requests, replies and events flow.  The master
answers every ``Heartbeat`` with a ``Pong``, so each side hears the other at
least once a beat and treats 2H of silence as a dead connection.  Workers
beat on a grid of the master's clock, inside the ``beat_window`` it
announces (see ``transport.beats``), so the master hears them together.

Every request carries a ``deadline`` in the master's clock (Unix seconds;
0 means none).  The worker maps it onto its own monotonic clock with the
master's ``Welcome.now`` and discards a request that arrives later: a
command the master has reported as failed is never carried out afterwards.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

PROTOCOL_VERSION = 3
MAX_FRAME = 16 * 1024 * 1024
MAX_HANDSHAKE_FRAME = 4 * 1024  # what a peer may send before it has authenticated
APP_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
JOBS_DIR = "jobs"  # ROOT/apps/APP/jobs/ID/INDEX: a job's replica's working directory

# Process states (DESIGN.md "Process states and reasons").
ALIVE_STATES = ("running", "sleeping", "stopped", "zombie")
ENDED_STATES = ("exited", "killed", "unknown")
ProcState = Literal["running", "sleeping", "stopped", "zombie", "exited", "killed", "unknown"]


def valid_app_name(name: str) -> bool:
    """True when ``name`` is a legal app name (and so a safe path part)."""
    return bool(APP_NAME_RE.fullmatch(name)) and name not in (".", "..")


class Base(msgspec.Struct, tag=True, omit_defaults=True, forbid_unknown_fields=False):
    """Common base: tagged by class name."""


# --------------------------------------------------------------------------
# Shared records
# --------------------------------------------------------------------------


class NodeFacts(msgspec.Struct, omit_defaults=True):
    """What a worker tells about its machine when it registers."""

    name: str
    hostname: str
    cpus: int
    mem_total: int
    boot_id: str
    ssh_host: str = ""
    ssh_port: int = 22
    root: str = ""
    pid: int = 0
    version: str = ""
    kernel: str = ""  # the node's kernel release (``uname -r``)
    # Bytes of memory this node offers to jobs (``corral worker --mem``); 0: a
    # worker that predates jobs, taken as MemTotal less 10%.
    mem_offer: int = 0


# gc=False (here and below): only scalars and lists of str, so never part of a
# cycle; thousands arrive a second and need no tracking by the collector.
class Metrics(msgspec.Struct, omit_defaults=True, gc=False):
    """A node's small per-beat sample."""

    cpu_percent: float = 0.0
    mem_used: int = 0
    mem_total: int = 0
    load1: float = 0.0
    apps: int = 0
    procs_alive: int = 0


class ProcInfo(msgspec.Struct, omit_defaults=True, gc=False):
    """One launched process as the worker knows it.

    ``launch`` is the worker-unique launch id; the log lives at
    ``ROOT/apps/APP/logs/<launch>.log``.  Times are Unix seconds.
    """

    launch: str
    pid: int
    app: str
    argv: list[str]
    state: ProcState
    started_at: float
    exit_code: int | None = None
    signal: str | None = None
    core_dumped: bool = False
    ended_at: float | None = None
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    rss: int = 0
    max_rss: int = 0
    key: str = ""  # the launch's request key (a job's replica is found by it)

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    @property
    def reason(self) -> str:
        """How the process ended, in words; empty while it lives."""
        if self.state == "exited":
            return f"exited {self.exit_code}"
        if self.state == "killed":
            core = ", core dumped" if self.core_dumped else ""
            return f"killed by {self.signal}{core}"
        if self.state == "unknown":
            return "ended while unobserved"
        return ""


class ProcSample(msgspec.Struct, array_like=True, gc=False):
    """Compact live sample of one process, sent with each heartbeat."""

    pid: int
    state: ProcState
    cpu_user: float
    cpu_sys: float
    rss: int
    max_rss: int


class FileInfo(msgspec.Struct, omit_defaults=True):
    """One file of an app on a worker: path relative to the app dir."""

    path: str
    size: int
    sha256: str
    mode: int = 0o644


class AppInfo(msgspec.Struct, omit_defaults=True):
    name: str
    files: list[FileInfo] = []
    procs_alive: int = 0


# --------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------


class Hello(Base):
    version: int
    name: str
    nonce: bytes


class Challenge(Base):
    version: int
    nonce: bytes
    proof: bytes


class Auth(Base):
    proof: bytes


class Welcome(Base):
    """``now``: the master's clock (Unix seconds) as it sent this, for request deadlines.

    ``keep_ended`` and ``keep_ended_for`` (seconds): the history rule, the
    ended processes a worker keeps records of, the same that the master keeps.
    """

    heartbeat: float
    master: str = ""
    now: float = 0.0
    keep_ended: int = 500
    keep_ended_for: float = 7 * 86400.0
    term: int = 0  # the leader's term with ``--etcd`` (the election key's revision); 0: none
    # Seconds: beat at this master's times k*H + an offset inside it (transport.beats); 0: any time
    beat_window: float = 0.0


class Enroll(Base):
    """A worker without a certificate asks for one: ``csr`` (DER) for node ``name``."""

    version: int
    name: str
    nonce: bytes
    csr: bytes


class Enrolled(Base):
    """The node's certificate and the CA's (DER), with the master's token proof over both."""

    cert: bytes
    ca: bytes
    proof: bytes


class Refused(Base):
    """Either side ends the handshake with a reason.

    ``leader``: a standby master's answer to a Hello, the leader's worker
    address (HOST:PORT), where the worker goes instead; "" when none leads.
    """

    reason: str
    leader: str = ""


class Register(Base):
    """A worker's full state, sent after every (re)connect."""

    facts: NodeFacts
    procs: list[ProcInfo] = []
    apps: list[str] = []


class Goodbye(Base):
    reason: str = ""


# --------------------------------------------------------------------------
# Steady state
# --------------------------------------------------------------------------


class Heartbeat(Base):
    seq: int
    metrics: Metrics
    procs: list[ProcSample] = []


class Pong(Base):
    """The master's answer to heartbeat ``seq``: proof for the worker that it is heard."""

    seq: int


class ProcEvent(Base):
    """A process was launched, changed or ended (unsolicited)."""

    proc: ProcInfo


# Requests: master -> worker.  Each has ``id``; the reply echoes it.


class Request(Base, kw_only=True):
    """Common head of every request: its id and its delivery deadline.

    ``deadline`` is the master's clock (Unix seconds) after which the
    worker must not act on it; 0 means no deadline.  ``term``: the
    sending leader's term (masters on etcd; 0 otherwise).  A worker
    remembers the highest it has seen and refuses a request of an older
    one: a deposed leader that wakes up can command nothing.
    """

    id: int
    deadline: float = 0.0
    term: int = 0


class Launch(Request):
    """``key``: the operator's request key; a second Launch with it returns the first result.

    ``workdir``: a directory inside the app dir, ``jobs/ID/INDEX`` for a
    job's replica (`JOBS_DIR`), made if missing and the program's working
    directory; a relative command with a slash (``./run.sh``) is found
    there.  Empty: the app dir, as before.
    """

    app: str
    argv: list[str]
    env: dict[str, str] = {}
    key: str = ""
    workdir: str = ""


class LaunchItem(msgspec.Struct):
    """One launch of a `LaunchBatch`: its request key, working directory and own variables.

    ``env`` is laid over the batch's (a job's replica gets its index there).
    """

    key: str
    workdir: str = ""
    env: dict[str, str] = {}


MAX_BATCH = 256  # launches in one LaunchBatch; a master sends more as several


class LaunchBatch(Request):
    """Several launches of one command at once (a job's replicas placed on one node).

    Each item is launched as `Launch` would with its ``key`` (required,
    unique in the batch) and ``workdir``.  An item whose key the worker
    has seen gets that first process; the others start together or not at
    all: every check is made, and a spare ready for each, before any is
    started, so a refusal (one `Error`) starts none.  Replied to by one
    `LaunchedBatch`.  1 to `MAX_BATCH` items.
    """

    app: str
    argv: list[str]
    env: dict[str, str] = {}
    items: list[LaunchItem] = []


class Status(Request):
    pass


class Signal(Request):
    """Send ``signal`` ("SIGINT", "SIGKILL", ...) to the process group of ``pid``."""

    pid: int
    signal: str


class Usage(Request):
    pass


class Logs(Request):
    """Read a process's log.

    With ``offset`` None the reply carries the last ``tail`` lines; with an
    offset, the bytes from there.  With ``follow`` the worker then sends
    ``LogChunk`` events tagged with this request's id until ``Unfollow`` or the
    process has ended and its log is drained (final chunk has ``eof``).

    Paging (added in place, version 2 peers that predate it ignore it):
    ``limit`` caps the bytes of the reply (0: the worker's own cap, which
    it never exceeds); ``before`` asks for the page that ends at that byte
    offset, starting at a line's start when one begins inside it.  With
    ``find``, the worker searches the log (ASCII letters in any case): the
    first line holding it that starts at or after ``offset`` (0 if None),
    or with ``before`` the last one that ends by then; the reply is the
    page from that line's start, with ``found`` its offset (-1: none).  A
    worker that predates ``find`` leaves ``found`` None.
    """

    pid: int
    tail: int = 10
    offset: int | None = None
    follow: bool = False
    limit: int = 0
    before: int | None = None
    find: str = ""


class Unfollow(Request):
    stream: int


class Files(Request):
    """List apps and their files (with cached sha256); ``app`` narrows it."""

    app: str | None = None


class Hashes(Request):
    """sha256 of the given paths (relative to the app dir); missing -> absent."""

    app: str
    paths: list[str]


class Remove(Request):
    app: str
    force: bool = False
    logs: bool = False


# A deploy writes each file as ``.NAME<UPLOAD_MARK><hex>`` beside its place, then
# renames it there (transport.sftp).  One cut off mid-write leaves it behind.
UPLOAD_MARK = ".corral-tmp-"


class PrepareApp(Request):
    """Create the app's directories so a deploy can write into them.

    Uploads left in bin/ and lib/ by deploys that died (a file named with
    `UPLOAD_MARK`) with no write for ``idle`` seconds are removed first;
    0 removes none.
    """

    app: str
    idle: float = 0.0


class JobFiles(Request):
    """The files of a replica's working directory (``workdir`` in the app dir) matching ``globs``.

    Globs are relative (``out.txt``, ``results/*.csv``, ``**/*.log``); only
    regular files reached without following a symlink are listed.
    """

    app: str
    workdir: str
    globs: list[str]


class BundleHave(Request):
    """Whether the node holds bundle ``sha256`` (``ROOT/bundles/SHA256``); where to send it.

    Sends that died (files in ``bundles/incoming/``, see `UPLOAD_MARK`) with
    no write for ``idle`` seconds are removed first; 0 removes none.
    """

    sha256: str
    idle: float = 0.0


class BundleCommit(Request):
    """The bundle was sent to the path `BundleHave` named: check its hash and keep it."""

    sha256: str


class Unpack(Request):
    """Unpack bundle ``sha256`` as the replica's working directory ``workdir`` of ``app``.

    ``key``: the replica's launch key; asked again with it (a master that
    restarted), a directory already unpacked for it is left as it is.
    """

    app: str
    workdir: str
    sha256: str
    key: str = ""


class Purge(Request):
    """Remove the replica's working directory ``workdir`` of ``app`` (results fetched)."""

    app: str
    workdir: str


# Replies: worker -> master.


class Renew(Request):
    """Worker -> master: a new certificate for the key in ``csr`` (DER), same node name.

    The one request a worker sends; the master answers `Renewed` or `Error`.
    """

    csr: bytes


class Renewed(Base):
    id: int
    cert: bytes


class Error(Base):
    id: int
    message: str


class Launched(Base):
    id: int
    proc: ProcInfo


class LaunchedBatch(Base):
    """The processes of a `LaunchBatch`, one per item, in the items' order."""

    id: int
    procs: list[ProcInfo]


class StatusReply(Base):
    id: int
    procs: list[ProcInfo]


class Signalled(Base):
    """``delivered`` False with ``message`` when nothing was signalled."""

    id: int
    delivered: bool
    message: str = ""
    proc: ProcInfo | None = None


class UsageReply(Base):
    id: int
    procs: list[ProcInfo]
    children_user: float
    children_sys: float
    children_max_rss: int


class LogChunk(Base):
    """Log bytes ``data`` starting at byte ``offset`` of the log file.

    As a reply, ``id`` is the request id; as a follow event, ``id`` is the
    id of the ``Logs`` request that opened the stream.
    """

    id: int
    offset: int
    data: bytes
    eof: bool = False
    size: int = -1  # the log's size when read (-1: not said, as older workers do)
    found: int | None = None  # Logs(find=...): where the matching line starts; -1: none


class FilesReply(Base):
    id: int
    apps: list[AppInfo]


class HashesReply(Base):
    id: int
    hashes: dict[str, str]


class Removed(Base):
    id: int
    removed: list[str]
    stopped: list[int] = []


class AppReady(Base):
    id: int
    path: str
    swept: list[str] = []  # leftover uploads removed, "bin/.NAME.corral-tmp-HEX (SIZE bytes)"


class JobFile(msgspec.Struct):
    path: str  # relative to the working directory
    size: int


class JobFilesReply(Base):
    """``path``: the working directory's absolute path on the node (for SFTP)."""

    id: int
    path: str
    files: list[JobFile] = []


class BundleAt(Base):
    """``present``: the node holds the bundle; ``path``: where it is, or where to send it."""

    id: int
    present: bool
    path: str


class UnpackReply(Base):
    id: int
    files: int
    bytes: int
    seconds: float


class Ok(Base):
    id: int


Message = (
    Hello
    | Challenge
    | Auth
    | Welcome
    | Enroll
    | Enrolled
    | Refused
    | Register
    | Goodbye
    | Heartbeat
    | Pong
    | ProcEvent
    | Launch
    | LaunchBatch
    | Status
    | Signal
    | Usage
    | Logs
    | Unfollow
    | Files
    | Hashes
    | Remove
    | PrepareApp
    | JobFiles
    | BundleHave
    | BundleCommit
    | Unpack
    | Purge
    | Renew
    | Renewed
    | Error
    | Launched
    | LaunchedBatch
    | StatusReply
    | Signalled
    | UsageReply
    | LogChunk
    | FilesReply
    | HashesReply
    | Removed
    | AppReady
    | JobFilesReply
    | BundleAt
    | UnpackReply
    | Ok
)

REQUESTS = (
    Launch,
    LaunchBatch,
    Status,
    Signal,
    Usage,
    Logs,
    Unfollow,
    Files,
    Hashes,
    Remove,
    PrepareApp,
    JobFiles,
    BundleHave,
    BundleCommit,
    Unpack,
    Purge,
)
REPLIES = (
    Error,
    Launched,
    LaunchedBatch,
    StatusReply,
    Signalled,
    UsageReply,
    LogChunk,
    FilesReply,
    HashesReply,
    Removed,
    AppReady,
    JobFilesReply,
    BundleAt,
    UnpackReply,
    Ok,
)
