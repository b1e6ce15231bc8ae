"""The worker daemon's entry point: configuration, the reconnect loop, shutdown.

``corral worker`` (and ``python -m corral.daemon``) call `add_arguments` and `main`.
The daemon dials the master over TLS with its certificate from
``ROOT/tls/``, registers its full state and serves requests
(`daemon.session`).  Without a certificate (its first start, or a new
``--name``) it first enrolls: the cluster token and a CSR for a key made
here buy a certificate, and the token is not needed again.  Whenever the
master is away it retries with jittered exponential backoff, capped at one
heartbeat H, while the programs keep running.  A dial gets H/2: after a
partition heals, the node is back within 2H.  SIGTERM or SIGINT: say
goodbye, exit 0, leave the programs running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.daemon import keygen, procfs
from corral.daemon.fence import Fence
from corral.daemon.session import Node, Session
from corral.daemon.store import AppStore
from corral.daemon.supervisor import Supervisor
from corral.daemon.unpack import MAX_FILES, Limits
from corral.transport import auth, handshake, streams, tls
from corral.transport.addresses import split_hostport
from corral.transport.codec import FrameError
from corral.transport.connection import Connection, ConnectionClosed
from corral.transport.loop import run as run_loop
from corral.transport.messages import Goodbye
from corral.transport.sizes import SizeError, parse_size

DEFAULT_ROOT = "~/.local/share/corral/worker"
BACKOFF_START = 0.1
DEFAULT_HEARTBEAT = 1.0  # until a master has announced its own
HEARTBEAT_RANGE = (0.05, 60.0)  # a hostile or broken Welcome cannot make us spin
DEFAULT_MEM_SHARE = 0.9  # of MemTotal offered to jobs without --mem


class ConfigError(Exception):
    """Bad command-line configuration: one line on stderr, exit 2."""


@dataclass(frozen=True)
class Config:
    """The worker's validated settings."""

    host: str
    port: int
    name: str
    root: Path
    token: str  # "" when the node holds a certificate and no token was given
    ssh_host: str | None
    ssh_port: int
    mem_offer: int = 0  # bytes offered to jobs (--mem; default MemTotal less 10%)
    bundle_limits: Limits = field(default_factory=Limits)  # --bundle-max-files, --bundle-max-bytes
    # Every master it may talk to (--master A,B,...), the first one first; a
    # standby among them sends the worker to the leader.
    masters: tuple[tuple[str, int], ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the worker's options to ``parser`` (shared with ``corral worker``)."""
    parser.add_argument(
        "--master",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="master address; several masters on etcd: each one, the leader is found",
    )
    parser.add_argument("--name", default=None, help="node name (default: the hostname)")
    parser.add_argument("--root", default=DEFAULT_ROOT, metavar="DIR", help="worker directory")
    parser.add_argument("--token-file", metavar="F", help="cluster token (else $CORRAL_TOKEN)")
    parser.add_argument("--ssh-host", metavar="HOST", help="SSH host advertised for deploys")
    parser.add_argument("--ssh-port", type=int, default=22, metavar="N", help="SSH port")
    parser.add_argument(
        "--mem",
        metavar="SIZE",
        help="memory this node offers to jobs (default: MemTotal less 10%%)",
    )
    parser.add_argument(
        "--bundle-max-files",
        type=int,
        default=MAX_FILES,
        metavar="N",
        help=f"members a job's bundle may unpack (default {MAX_FILES:,})",
    )
    parser.add_argument(
        "--bundle-max-bytes",
        default="2G",
        metavar="SIZE",
        help="bytes a job's bundle may unpack to, per replica (default 2G)",
    )


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[V6]:PORT``) -> (host, port); ConfigError if malformed."""
    try:
        return split_hostport(text, None, what="--master", port_zero=False, default_host=None)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def parse_masters(text: str) -> tuple[tuple[str, int], ...]:
    """``HOST:PORT[,HOST:PORT...]`` -> the addresses, in order; ConfigError if one is malformed."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise ConfigError(f"--master: empty address in {text!r}")
    return tuple(dict.fromkeys(parse_address(p) for p in parts))


def config_from_args(args: argparse.Namespace) -> Config:
    """Validate ``args``; ConfigError says what is wrong."""
    masters = parse_masters(args.master)
    host, port = masters[0]
    name = args.name or socket.gethostname()
    try:
        token = auth.load_token(args.token_file)
    except auth.AuthError as e:
        # Enrolled already: the certificate is what gets it in.  A bad token
        # file is an error all the same; only a missing token is not.
        certs = tls.NodeFiles(Path(args.root).expanduser().absolute() / "tls")
        if args.token_file or certs.enrolled_as() != name:
            raise ConfigError(str(e)) from None
        token = ""
    if not 0 < args.ssh_port < 65536:
        raise ConfigError(f"bad --ssh-port {args.ssh_port}")
    mem_offer = parse_mem(args.mem)  # before --root is made: a bad value changes nothing
    limits = bundle_limits(args.bundle_max_files, args.bundle_max_bytes)
    root = Path(args.root).expanduser().absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
    except OSError as e:
        raise ConfigError(f"cannot use --root {args.root}: {e.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot use --root {args.root}: not writable")
    return Config(
        host, port, name, root, token, args.ssh_host, args.ssh_port, mem_offer, limits, masters
    )


def bundle_limits(files: int, size: str) -> Limits:
    """``--bundle-max-files`` and ``--bundle-max-bytes``, checked; ConfigError if bad."""
    if not 1 <= files <= 10_000_000:
        raise ConfigError(f"bad --bundle-max-files {files}: give 1 to 10000000")
    try:
        limit = parse_size(size)
    except SizeError as e:
        why = str(e).split(": ", 1)[-1]
        raise ConfigError(f"bad --bundle-max-bytes {size!r}: {why}") from None
    return Limits(files, limit)


def parse_mem(text: str | None) -> int:
    """``--mem`` in bytes; None: MemTotal less 10% (`DEFAULT_MEM_SHARE`).  ConfigError if bad."""
    if text is None:
        return int(procfs.mem_total() * DEFAULT_MEM_SHARE)
    try:
        return parse_size(text)
    except SizeError as e:
        why = str(e).split(": ", 1)[-1]  # "bad size '10Q': why": the why, under our name
        raise ConfigError(f"bad --mem {text!r}: {why}") from None


def main(args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM/SIGINT; 0 then, 2 on bad configuration."""
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"corral-worker: {e}", file=sys.stderr)
        return 2
    try:
        return run_loop(Worker(config).run())
    except KeyboardInterrupt:  # before the loop's own handler was installed
        return 0
    except OSError as e:
        print(f"corral-worker[{config.name}]: {e}", file=sys.stderr)
        return 1


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "unknown"


def _clamp_heartbeat(seconds: float) -> float:
    if not math.isfinite(seconds):
        return 1.0
    return min(max(seconds, HEARTBEAT_RANGE[0]), HEARTBEAT_RANGE[1])


def backoff(attempt: int, cap: float = DEFAULT_HEARTBEAT) -> float:
    """Jittered exponential delay before reconnect ``attempt`` (0-based), at most ``cap``."""
    delay = min(cap, BACKOFF_START * 2.0 ** min(attempt, 32))
    return delay * random.uniform(0.5, 1.0)  # jitter: workers do not stampede back


def dial_timeout(heartbeat: float) -> float:
    """How long one connection attempt may take: half a beat, within [0.25 s, 5 s]."""
    return min(max(heartbeat / 2, 0.25), 5.0)


class Worker:
    """The daemon: one supervisor and store, a succession of sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = AppStore(config.root)
        self.store.bundle_limits = config.bundle_limits
        self.sup = Supervisor(config.root, self.store, config.name, self.log)
        self.node = Node(
            name=config.name,
            root=config.root,
            ssh_host=config.ssh_host,
            ssh_port=config.ssh_port,
            version=_version(),
            sup=self.sup,
            store=self.store,
            log=self.log,
            mem_offer=config.mem_offer,
        )
        self.certs = tls.NodeFiles(config.root / "tls")
        self.node.certs = self.certs
        self.node.clock = renewal_clock()
        self.node.fence = Fence(config.root)
        self.masters = list(config.masters or ((config.host, config.port),))
        self._target = self.masters[0]  # the master dialled next
        self._conn: Connection | None = None
        self._heartbeat = DEFAULT_HEARTBEAT  # the last one a master announced
        self._attempt = 0
        self._last_failure = ""
        self._logged: set[str] = set()  # failures said since the last connect (several masters)

    def log(self, text: str) -> None:
        """One line per event on stderr."""
        line = " ".join(text.split())
        print(f"corral-worker[{self.config.name}]: {line}", file=sys.stderr, flush=True)

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then say goodbye; returns the exit status."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.sup.start()
        alive = len(self.sup.alive())
        self.log(f"started: root {self.config.root}, {alive} running processes adopted")
        serving = asyncio.create_task(self._serve_forever())
        await stop.wait()
        self.log("stopping; programs keep running")
        await self._goodbye()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        self.sup.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        return 0

    async def _goodbye(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(ConnectionClosed, TimeoutError, OSError):
            await asyncio.wait_for(self._conn.send(Goodbye(reason="worker stopping")), 1.0)

    async def _serve_forever(self) -> None:
        while True:
            try:
                await self._connect_once()
            except auth.Redirect as e:
                if self._redirected(e):
                    await asyncio.sleep(random.uniform(0.02, 0.05))  # straight to the leader
                    continue
                self._failed(e)
                self._next_master()
            except (
                OSError,
                ConnectionClosed,
                FrameError,
                auth.AuthError,
                TimeoutError,
                tls.TlsError,
            ) as e:
                self._failed(e)
            except Exception as e:  # whatever the master sends, the worker stays up
                self._failed(e)
            else:
                self._failed(ConnectionClosed("the session ended"))
            if self._session_failed():
                self._next_master()
            await asyncio.sleep(backoff(self._attempt, self._heartbeat))
            self._attempt += 1

    def _session_failed(self) -> bool:
        """Whether to try another master now: this one did not serve us, and another was
        listed, or this was a leader a standby named and nobody listed (back to the list)."""
        return len(self.masters) > 1 or self._target not in self.masters

    def _next_master(self) -> None:
        """The next listed master after the one just tried (a leader's address may be unlisted)."""
        if self._target in self.masters:
            i = (self.masters.index(self._target) + 1) % len(self.masters)
        else:
            i = 0
        self._target = self.masters[i]

    def _redirected(self, e: auth.Redirect) -> bool:
        """A standby named the leader: go there next; False if it named none usable."""
        try:
            leader = split_hostport(
                e.leader, None, what="leader", port_zero=False, default_host=None
            )
        except ValueError:
            return False
        if leader == self._target:
            return False
        text = f"{self._target[0]}:{self._target[1]} is a standby; the leader is {e.leader}"
        if text not in self._logged:
            self.log(text)
            self._logged.add(text)
        self._last_failure = text
        self._target = leader
        return True

    def _failed(self, e: Exception) -> None:
        addr = f"{self._target[0]}:{self._target[1]}"
        if isinstance(e, tls.TlsError):
            text = str(e)
        elif isinstance(e, auth.AuthError):
            text = f"handshake with {addr} failed: {e}"
            if "is revoked" in str(e):
                text += f" (to enroll again: remove {self.certs.cert}, restart with the token)"
        elif isinstance(e, FrameError):
            text = f"bad frame from master, closing: {e}"
        elif isinstance(e, ConnectionClosed):
            text = f"connection to {addr} lost: {e}"
        elif isinstance(e, OSError | TimeoutError):
            why = getattr(e, "strerror", None) or str(e) or "timed out"
            text = f"cannot reach master {addr}: {why}"
        else:
            text = f"session with {addr} ended by an unexpected error: {e!r}"
        # A master that stays down would fill the log with the same line (with
        # several masters listed, the same few lines in turn).
        if text != self._last_failure and text not in self._logged:
            self.log(text)
            if len(self.masters) > 1:
                self._logged.add(text)
        self._last_failure = text

    async def _dial(self, ctx: ssl.SSLContext) -> Connection:
        host, port = self._target
        timeout = dial_timeout(self._heartbeat)
        reader, writer = await asyncio.wait_for(
            streams.open_connection(
                host, port, ssl=ctx, server_hostname=host, ssl_handshake_timeout=timeout
            ),
            timeout,
        )
        return Connection(reader, writer)

    async def _enroll(self) -> None:
        """Trade the token and a CSR for this node's certificate (kept in ROOT/tls/)."""
        cfg = self.config
        if not cfg.token:
            raise tls.TlsError(
                f"no usable certificate for {cfg.name} in {self.certs.dir} (none, or expired)"
                " and no token to enroll with"
            )
        csr = await keygen.make(self.certs, cfg.name)
        conn = await self._dial(tls.enroll_context())
        try:
            done = await handshake.enroll(conn, cfg.token, cfg.name, csr)
        finally:
            await conn.close()
        try:
            self.certs.store(done.cert, done.ca)
        except ValueError as e:
            raise tls.TlsError(f"the master sent an unusable certificate: {e}") from None
        host, port = self._target
        self.log(f"enrolled with {host}:{port}: certificate in {self.certs.dir}")

    async def _connect_once(self) -> None:
        cfg = self.config
        if not self.certs.usable_for(cfg.name, time.time()):  # none yet, or expired
            await self._enroll()
        conn = await self._dial(self.certs.context())
        try:
            welcome = await handshake.connect_channel(conn, cfg.name)
            host, port = self._target
            self._check_term(welcome.term)
            heartbeat = self._heartbeat = _clamp_heartbeat(welcome.heartbeat)
            now = welcome.now if math.isfinite(welcome.now) and welcome.now > 0 else 0.0
            term = f", term {welcome.term}" if welcome.term else ""
            self.log(f"connected to {host}:{port} (heartbeat {heartbeat:g}s{term})")
            self._attempt, self._last_failure = 0, ""
            self._logged.clear()
            self.sup.set_history(welcome.keep_ended, welcome.keep_ended_for)
            self._conn = conn
            await Session(self.node, conn, heartbeat, now, welcome.beat_window).run()
        finally:
            self._conn = None
            await conn.close()

    def _check_term(self, term: int) -> None:
        """A master announcing an older term than one seen is a deposed leader: not followed."""
        fence = self.node.fence
        if fence is None or not term:
            return
        why = fence.refusal(term)
        if why:
            raise auth.AuthError(f"not following it: {why}")
        try:
            fence.see(term)
        except OSError as e:
            raise auth.AuthError(f"cannot record term {term} in {self.config.root}: {e}") from None


def renewal_clock() -> Callable[[], float]:
    """The wall clock certificate renewal goes by: ``time.time``, moved for tests.

    ``$CORRAL_TEST_CLOCK`` names a file holding seconds to add (read at each
    call; absent or unreadable: none), so a test can move a running worker's
    clock two months on and watch it renew.
    """
    path = os.environ.get("CORRAL_TEST_CLOCK", "")
    if not path:
        return time.time

    def clock() -> float:
        try:
            return time.time() + float(Path(path).read_text() or 0)
        except (OSError, ValueError):
            return time.time()

    return clock
