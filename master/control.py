"""The control plane: the `Master` facade every front end calls.

The TUI, the HTTP API and tests all act through these async verbs; they
raise `VerbError` with a one-line message that says what was wrong, and
change nothing when the input is bad.

The master knows nothing of its front ends: the HTTP API (`master.api`)
and the deployer (`master.deployer`) are built on it by whoever runs it
(`master.headless`, the dashboard), and import this module, never the
other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from corral.master.ca import CA, serving_names
from corral.master.config import ConfigError, SshConfig, load_history
from corral.master.election import Election, MasterInfo
from corral.master.ends import EndWatch
from corral.master.errors import VerbError as VerbError  # re-exported: the verbs raise it
from corral.master.etcd import Etcd, EtcdError, SyncEtcd
from corral.master.etcd_events import EtcdEvents
from corral.master.etcd_store import EtcdTicketStore
from corral.master.events import EventLog, merge_events
from corral.master.jobs import Jobs
from corral.master.model import Cluster, Event, ProcView
from corral.master.names import BadName, parse_target, signal_name
from corral.master.server import Follow, WorkerLink, WorkerServer
from corral.master.state import default_state_dir, write_atomic
from corral.master.tails import TailKeeper
from corral.master.tickets import StoreError
from corral.transport.addresses import WILDCARDS, join_hostport, split_hostport
from corral.transport.auth import ensure_token, new_token
from corral.transport.connection import CallError, ConnectionClosed
from corral.transport.messages import (
    Launch,
    Launched,
    LogChunk,
    Logs,
    Remove,
    Removed,
    Signal,
    Signalled,
    Unfollow,
    Usage,
    UsageReply,
    valid_app_name,
)
from corral.transport.tls import write_private

log = logging.getLogger("corral.master")

LAUNCH_KEYS = 4096  # launch results remembered by request key, for retries


class StartError(OSError):
    """The master could not start; the message names what and why."""


def why(e: OSError) -> str:
    """The plain reason of ``e`` ("Address already in use"), whoever wrapped it."""
    return os.strerror(e.errno) if e.errno else str(e)


@dataclass
class MasterConfig:
    """Where the master listens and keeps its state."""

    listen: str = "0.0.0.0:7070"
    api: str = "127.0.0.1:7071"
    state_dir: Path = field(default_factory=default_state_dir)
    heartbeat: float = 1.0
    # How deploys reach the workers' sshd; None: read STATE_DIR/config.toml
    # ([ssh]) at each deploy, so an edit applies without a restart.
    ssh: SshConfig | None = None
    # Standby masters: etcd's client URLs ([]: one master, state in state_dir),
    # this master's name among them, and the election lease's TTL in seconds.
    etcd: list[str] = field(default_factory=list)
    name: str = ""
    lease: float = 5.0
    # The host other machines reach this master at, where --listen or --api
    # binds every address ("": this machine's address on the way to etcd).
    advertise: str = ""


def route_address(etcd: Sequence[str] = ()) -> str:
    """This machine's address on its route to etcd's first host, else to anywhere.

    Connecting a UDP socket sends nothing: the kernel only picks the source
    address its route would use.  Without any route: the first address of
    an interface that is up, else loopback.
    """
    from urllib.parse import urlsplit

    toward = [h for h in (urlsplit(u).hostname for u in etcd) if h][:1]
    for host in [*toward, "192.0.2.1"]:  # TEST-NET-1: any routable address will do
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, 9))
                address = str(s.getsockname()[0])
        except OSError:
            continue
        if address not in WILDCARDS:
            return address
    import psutil  # no route at all: an address of an interface that is up, else loopback

    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if name in up and a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return "127.0.0.1"


class SignalResult(msgspec.Struct, frozen=True):
    target: str
    delivered: bool
    message: str = ""


class WaitedSignalResult(SignalResult, frozen=True):
    """A signal's result after a wait: ``ended`` in time or not, ``reason`` how
    ("killed by SIGINT"), ``seconds`` how long after the signal went out."""

    ended: bool = False
    reason: str = ""
    seconds: float | None = None


class LaunchResult(msgspec.Struct, frozen=True):
    procs: list[ProcView]
    errors: dict[str, str]  # node -> why it failed there


class NodeUsage(msgspec.Struct, frozen=True):
    node: str
    children_user: float
    children_sys: float
    children_max_rss: int
    procs: list[ProcView]


class RemoveResult(msgspec.Struct, frozen=True):
    node: str
    removed: list[str] = []
    stopped: list[int] = []
    error: str = ""


class LogPiece(msgspec.Struct, frozen=True):
    """Bytes of a log from ``offset``; ``eof`` once the process ended and all is read."""

    offset: int
    data: bytes
    eof: bool = False
    size: int = -1  # the log's size when read; -1 when the worker did not say
    found: int | None = None  # read_log(find=...): the matching line's offset, -1: none


class Master:
    """The control plane: cluster model, worker listener, event log, verbs."""

    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        self.events = EventLog(config.state_dir / "events.log")
        self.cluster = Cluster(event_sink=self._log_event)
        self.etcd_events: EtcdEvents | None = None  # the leader's recent events, in etcd
        self.tails: TailKeeper | None = None  # ended processes' last log lines (from start)
        self.token = ""
        self.ca: CA | None = None
        self.server: WorkerServer | None = None
        self.listen_address = ""
        self._launch_keys: OrderedDict[
            str, tuple[tuple[object, ...], asyncio.Future[LaunchResult]]
        ] = OrderedDict()
        self.started_at = time.time()
        self.jobs = Jobs(self)
        self.election: Election | None = None
        self._store_etcd: SyncEtcd | None = None
        self._store_aio: Etcd | None = None
        self.api_address = ""
        self._advertise = ""  # see reachable()
        self._seen: tuple[object, ...] = ()  # the election's state last reported
        self._tasks: set[asyncio.Task[Any]] = set()

    def reachable(self, bound: str) -> str:
        """``bound`` (HOST:PORT) as other machines reach it: a wildcard host is advertised.

        The advertised host is ``--advertise``, else this machine's address
        on its route to etcd (or, without etcd, to anywhere), found once.
        """
        try:
            host, port = split_hostport(bound, None)
        except ValueError:
            return bound
        if host not in WILDCARDS:
            return bound
        if not self._advertise:
            self._advertise = self.config.advertise or route_address(self.config.etcd)
        return join_hostport(self._advertise, port)

    # --- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        """Bind the worker port and start serving; publish it in ``STATE_DIR/listen``.

        Raises `StartError` (an OSError) naming the step that failed.
        """
        state = self.config.state_dir
        try:
            self.token = ensure_token(state)
        except OSError as e:
            raise StartError(f"cannot use state directory {state}: {why(e)}") from None
        try:
            history = load_history(state)
        except ConfigError as e:
            raise StartError(str(e)) from None
        self.cluster.keep_ended, self.cluster.keep_ended_for = history.keep, history.max_age
        self._start_history()
        if self.config.etcd:
            await self._reach_etcd()
        else:
            try:  # before workers connect: they are reconciled with its open jobs
                self.jobs.start(state / "jobs.db")
            except StoreError as e:
                raise StartError(str(e)) from None
        host, port = split_hostport(self.config.listen, 7070)
        api_host = split_hostport(self.config.api, 7071)[0]
        advertised = [self.config.advertise] if self.config.advertise else []
        try:
            self.ca = CA(state / "tls").open()
            self.ca.write_server_cert(serving_names([host, api_host, *advertised]))
        except (OSError, ValueError) as e:
            raise StartError(f"cannot set up the cluster CA in {state / 'tls'}: {e}") from None
        self.server = WorkerServer(self.cluster, self.token, self.config.heartbeat, self.ca)
        try:
            self.listen_address = await self.server.start(host, port)
        except OSError as e:
            raise StartError(f"cannot listen for workers on {host}:{port}: {why(e)}") from None
        write_atomic(state / "listen", self.listen_address + "\n")
        log.info("listening for workers on %s", self.listen_address)
        if self.config.etcd:
            self.server.standby = self._standby

    # --- standby masters on etcd -------------------------------------------
    async def _reach_etcd(self) -> None:
        """Check etcd answers before anything binds: a wrong URL is a one-line error."""
        etcd = Etcd(self.config.etcd)
        try:
            await etcd.status()
        except EtcdError as e:
            await etcd.close()
            raise StartError(f"--etcd: {e}") from None
        await etcd.close()

    async def campaign(self) -> None:
        """Join the election (masters on etcd), once the API's address is known.

        The front end calls it after `start` and the API; a master without
        ``--etcd`` leads alone and this does nothing.  StartError if etcd
        cannot be used.
        """
        if not self.config.etcd or self.election is not None:
            return
        name = self.config.name or f"{os.uname().nodename}-{os.getpid()}"
        me = MasterInfo(name, self.reachable(self.listen_address), self.reachable(self.api_address))
        election = Election(Etcd(self.config.etcd), me, self.config.lease, self._election_moved)
        self._store_etcd = SyncEtcd(self.config.etcd)
        self._store_aio = Etcd(self.config.etcd, writes=True)
        self.etcd_events = EtcdEvents(self._store_aio)
        self.election = election
        try:
            await election.start()
        except EtcdError as e:
            self.election = None
            await election.stop()
            raise StartError(f"--etcd: {e}") from None
        self._election_moved()

    async def masters(self) -> dict[str, Any]:
        """The masters (``corral masters``): each one's role, and the leader's term."""
        e = self.election
        if e is None:
            me = {
                "name": self.config.name or os.uname().nodename,
                "address": self.reachable(self.listen_address),
                "api": self.reachable(self.api_address),
                "role": "leader",
                "leader_since": self.started_at,
                "term": 0,
            }
            return {"masters": [me], "this": me["name"], "acting": True, "etcd": ""}
        try:
            found = await e.masters()
            why = ""
        except EtcdError as err:
            found, why = [e.me], str(err)
        rows = [
            {
                "name": m.name,
                "address": m.listen,
                "api": m.api,
                "role": "leader" if m.term else "standby",
                "leader_since": m.since if m.term else 0,
                "term": m.term,
            }
            for m in found
        ]
        return {"masters": rows, "this": e.me.name, "acting": e.acting, "etcd": why}

    def ha_summary(self) -> tuple[str, str, str]:
        """For the dashboard's header: (role, term or leader, the other masters); "" alone."""
        e = self.election
        if e is None:
            return "", "", ""
        others = ", ".join(e.others)
        if e.acting:
            return "leader", f"term {e.term}", others
        if not e.reachable:
            return "etcd unreachable", "", others
        if e.leader is not None and e.leader.name != e.me.name:
            return "standby", f"{e.leader.name} leads (term {e.leader.term})", others
        return "standby", "no leader", others

    @property
    def acting(self) -> bool:
        """This master may accept workers, schedule and command: the leader, or alone."""
        return self.election is None or self.election.acting

    def standby_reason(self) -> str:
        """Why this master does not act now, in one line ("" when it does)."""
        e = self.election
        if e is None or e.acting:
            return ""
        if not e.reachable:
            return f"not acting: etcd is unreachable ({e.error})"
        if e.leader is not None and e.leader.name != e.me.name:
            return f"this master is a standby: {e.leader.name} leads (API {e.leader.api})"
        if e.leading:
            return "not acting: the lease could not be renewed in time"
        return "not acting: no master leads yet"

    def _standby(self) -> tuple[str, str]:
        """For a worker's hello: why we take no workers, and the leader's address."""
        why = self.standby_reason()
        e = self.election
        leader = e.leader.listen if why and e is not None and e.leader is not None else ""
        return why, leader if leader != self.reachable(self.listen_address) else ""

    def _election_moved(self) -> None:
        """The election changed: a new term to take up, a lead lost, etcd gone or back."""
        e = self.election
        if e is None:
            return
        leader = e.leader.name if e.leader else ""
        seen = (e.acting, e.term, leader, e.reachable, e.expired)
        if seen == self._seen:
            return
        before, self._seen = self._seen, seen
        was_acting, was_term, was_leader, was_reachable, _ = before or (False, 0, "", True, False)
        if e.reachable != was_reachable:
            if e.reachable:
                self.cluster.note("etcd.back", "", "etcd answers again")
            else:
                self.cluster.note("etcd.down", "", f"etcd unreachable: {e.error}")
        if e.acting and (e.term != was_term or not was_acting):
            # A new term, or ours again after a spell without etcd: take the jobs
            # and the event log up where etcd has them (they stood by meanwhile).
            self._take_up(e.term)
        elif was_acting and not e.acting:
            if self.etcd_events is not None:
                self.etcd_events.stand_by()
            self.cluster.note("master.standby", "", self.standby_reason())
        if leader and leader != e.me.name and leader != was_leader and e.leader is not None:
            term = e.leader.term
            self.cluster.note("master.standby", "", f"{leader} leads (term {term}): standing by")
        if leader and leader != e.me.name and self.server is not None and self.server.links:
            self.server.send_away(f"{leader} leads now")
        elif not e.acting and e.expired and self.server is not None and self.server.links:
            # Cut off from etcd past our lease: another master may lead; let the
            # workers look for it (they come back here if we lead again).
            self.server.send_away("this master's lease has ended")

    def _take_up(self, term: int) -> None:
        """This master won ``term``: fence with it, and take up the jobs where they are."""
        assert self.election is not None and self._store_etcd is not None
        if self.server is not None:
            self.server.set_term(term)
            if self.ca is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.ca.open()  # nodes enrolled with another master (shared CA)
        try:
            self.jobs.take_up(EtcdTicketStore(self._store_etcd, term, self._store_aio))
        except StoreError as e:
            self.cluster.note("master.error", "", f"jobs not taken up: {e}")
        if self.etcd_events is not None:
            self._background(self._take_up_events(self.etcd_events, term))
        name = self.election.me.name
        self.cluster.note("master.leader", "", f"{name} leads (term {term})")

    async def _take_up_events(self, etcd_events: EtcdEvents, term: int) -> None:
        """The cluster's recent events (earlier leaders' too) into the events ring."""
        try:
            kept = await etcd_events.take_up(term)
        except (EtcdError, ValueError) as e:
            log.warning("recent events not read from etcd: %s", e)
            return
        ring = self.cluster.events
        self.cluster.replace_events(merge_events(ring, kept, limit=ring.maxlen or len(ring)))

    async def recent_events(self, limit: int) -> list[Event]:
        """This master's last ``limit`` events; with etcd, merged with the cluster's recent ones."""
        own = self.events.read(limit)
        if self.etcd_events is None:
            return own
        try:
            kept = await self.etcd_events.recent(limit)
        except EtcdError as e:
            log.info("recent events not read from etcd: %s", e)
            return own
        return merge_events(own, kept, limit=limit)

    def _log_event(self, event: Event) -> None:
        self.events.append(event)
        if self.etcd_events is not None:
            self.etcd_events.append(event)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_history(self) -> None:
        """The recent events of earlier runs, for the events pane; log tails from now on."""
        ring = self.cluster.events
        if not ring:  # a first start (a second one's events are in the ring already)
            ring.extend(self.events.read(ring.maxlen or 0))
        if self.tails is None:
            self.tails = TailKeeper(self.cluster, self.logs)

    async def stop(self) -> None:
        if self.election is not None:
            await self.election.stop()  # the lease goes at once: a standby leads now
        await self.jobs.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.etcd_events is not None:
            await self.etcd_events.close()
        if self._store_etcd is not None:
            self._store_etcd.close()
        if self._store_aio is not None:
            await self._store_aio.close()
        if self.tails is not None:
            await self.tails.close()
            self.tails = None
        if self.server is not None:
            await self.server.stop()
        self.events.close()
        kept = sys.modules.get("corral.transport.sftp")  # imported by a first push, if any
        if kept is not None:
            await asyncio.to_thread(kept.KEPT.close_all)

    # --- helpers -----------------------------------------------------------
    def link(self, node: str) -> WorkerLink:
        """The connection to ``node``; VerbError at once if it is unknown, lost or gone.

        VerbError too while this master may not command (a standby, or a
        leader whose lease is in doubt).
        """
        if not self.acting:
            raise VerbError(self.standby_reason())
        if not self.cluster.has_node(node):
            raise VerbError(f"unknown node: {node}")
        if self.server is None:
            raise VerbError("the master is not running")
        link = self.server.links.get(node)
        if link is None or link.closed:
            raise VerbError(self.unreachable(node))
        return link

    def unreachable(self, node: str) -> str:
        """Why no command can go to ``node`` now ("node2 is lost (no heartbeat for 2.3 s)")."""
        state = self.cluster.node_state(node)
        if state == "left":
            return f"{node} has left (its worker said goodbye)"
        age = time.monotonic() - self.cluster.last_beat_mono(node)
        return f"{node} is {state} (no heartbeat for {age:.1f} s)"

    def links(self, nodes: Sequence[str]) -> tuple[dict[str, WorkerLink], dict[str, str]]:
        """The connections to ``nodes``, and why each of the others cannot be reached.

        A node that is lost or gone is its own failure: a verb goes on with the others.
        """
        links: dict[str, WorkerLink] = {}
        errors: dict[str, str] = {}
        for n in nodes:
            try:
                links[n] = self.link(n)
            except VerbError as e:
                errors[n] = str(e)
        return links, errors

    def select_nodes(self, nodes: Sequence[str] = (), all_nodes: bool = False) -> list[str]:
        """The nodes a verb acts on: the named ones (all must exist) or every alive one."""
        if nodes and all_nodes:
            raise VerbError("give --node or --all, not both")
        if all_nodes:
            picked = [n.name for n in self.cluster.nodes() if n.state in ("alive", "suspect")]
            if not picked:
                raise VerbError("no alive nodes")
            return picked
        if not nodes:
            raise VerbError("no node chosen: give --node NAME or --all")
        unknown = [n for n in nodes if not self.cluster.has_node(n)]
        if unknown:
            raise VerbError(f"unknown node: {', '.join(unknown)}")
        return list(dict.fromkeys(nodes))

    def _proc(self, target: str) -> ProcView:
        """The process ``NODE:PID`` names; VerbError if the name or either part is unknown."""
        try:
            node, pid = parse_target(target)
        except BadName as e:
            raise VerbError(str(e)) from None
        if not self.cluster.has_node(node):
            raise VerbError(f"unknown node: {node}")
        proc = self.cluster.proc(f"{node}:{pid}")
        if proc is None:
            raise VerbError(f"no such process: {target}")
        return proc

    def _proc_for(self, target: str) -> tuple[WorkerLink, ProcView]:
        proc = self._proc(target)
        return self.link(proc.node), proc

    # --- certificates and the token ---------------------------------------
    def revoke_node(self, node: str) -> int:
        """Cut ``node`` off and refuse its certificates; VerbError if it never enrolled."""
        if self.server is None or self.ca is None:
            raise VerbError("the master is not running")
        if node not in self.ca.nodes:
            raise VerbError(f"unknown node: {node} (no certificate on record)")
        return self.server.revoke(node)

    def cert_expiry(self, node: str) -> float | None:
        """When ``node``'s newest certificate expires (Unix time); None if it has none."""
        return None if self.ca is None else self.ca.expires(node)

    def rotate_token(self) -> Path:
        """A new enrollment token in ``STATE_DIR/token``; enrolled nodes keep their certificates.

        The API's bearer token is the same token, so it changes too.
        """
        path = self.config.state_dir / "token"
        token = new_token()
        try:
            write_private(path, (token + "\n").encode())
        except OSError as e:
            raise VerbError(f"cannot write {path}: {why(e)}") from None
        self.token = token
        if self.server is not None:
            self.server.token = token
        self.cluster.note("token.rotated", "", "the enrollment token was replaced")
        return path

    # --- verbs -------------------------------------------------------------
    async def launch(
        self,
        argv: Sequence[str],
        nodes: Sequence[str] = (),
        all_nodes: bool = False,
        app: str | None = None,
        key: str | None = None,
        env: dict[str, str] | None = None,
    ) -> LaunchResult:
        """Start ``argv`` inside ``app`` on each chosen node, in parallel.

        ``env``: variables laid over each worker's own environment for it.

        A node that is lost or gone is that node's error, at once; the others
        still launch.  ``key`` is the operator's request key: a launch
        repeated with it (here, or to a restarted master, which asks the
        workers) returns the first result and starts nothing more.
        """
        if not argv or not argv[0]:
            raise VerbError("nothing to launch: give a program")
        app = app or os.path.basename(argv[0])
        if not valid_app_name(app):
            raise VerbError(f"invalid app name {app!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        if key is not None and not 0 < len(key) <= 128:
            raise VerbError("bad request key: give 1-128 characters")
        env = env or {}
        picked = self.select_nodes(nodes, all_nodes)
        if not key:
            return await self._launch(list(argv), picked, app, "", env)
        ask = (tuple(argv), tuple(picked), app, tuple(sorted(env.items())))
        first = self._launch_keys.get(key)
        if first is not None:
            if first[0] != ask:
                raise VerbError(f"request key {key} was used for another launch")
            return await asyncio.shield(first[1])
        task = asyncio.ensure_future(self._launch(list(argv), picked, app, key, env))
        self._launch_keys[key] = (ask, task)
        while len(self._launch_keys) > LAUNCH_KEYS:
            self._launch_keys.popitem(last=False)
        return await asyncio.shield(task)

    async def _launch(
        self, args: list[str], picked: list[str], app: str, key: str, env: dict[str, str]
    ) -> LaunchResult:
        links, errors = self.links(picked)

        def ask(i: int) -> Launch:
            return Launch(id=i, app=app, argv=args, env=env, key=key)

        async def one(link: WorkerLink) -> ProcView:
            reply = await link.call(ask, Launched)
            self.cluster.update_proc(link.name, reply.proc)
            view = self.cluster.proc(f"{link.name}:{reply.proc.pid}")
            assert view is not None
            return view

        results = await asyncio.gather(*(one(lk) for lk in links.values()), return_exceptions=True)
        procs: list[ProcView] = []
        for name, res in zip(links, results, strict=True):
            if isinstance(res, ProcView):
                procs.append(res)
            else:
                errors[name] = str(res)
        return LaunchResult(procs=procs, errors={n: errors[n] for n in picked if n in errors})

    async def signal(
        self, targets: Sequence[str], signal: str, wait: float | None = None
    ) -> list[SignalResult]:
        """Send ``signal`` to each target's process group, all at once.

        Each target is its own result: a bad name, an unknown process or a
        lost node fails that target alone.  An unknown signal fails the verb.
        With ``wait`` (seconds), return once every target the signal reached
        has ended, or the time is up, saying of each how it ended.
        """
        if not targets:
            raise VerbError("no process given: expected NODE:PID")
        try:
            sig = signal_name(signal)
        except BadName as e:
            raise VerbError(str(e)) from None
        unique = list(dict.fromkeys(targets))
        if wait is None:
            return list(await asyncio.gather(*(self._signal(t, sig) for t in unique)))
        return await self._signal_and_wait(unique, sig, wait)

    async def _signal_and_wait(
        self, targets: list[str], sig: str, wait: float
    ) -> list[SignalResult]:
        known = []
        for t in targets:
            with contextlib.suppress(VerbError):  # _signal reports it
                known.append(self._proc(t))
        watch = EndWatch(self.cluster, known)  # before the signal: no end can slip by
        try:
            sent = await asyncio.gather(*(self._signal(t, sig) for t in targets))
            for r in sent:
                watch.check_now(r.target)
            ends = await watch.wait([r.target for r in sent if r.delivered], wait)
        finally:
            watch.close()
        results: list[SignalResult] = []
        for r in sent:
            end = ends.get(r.target)
            if not r.delivered:
                results.append(r)
                continue
            waited = WaitedSignalResult(r.target, r.delivered, r.message)
            if end is not None:
                secs = round(end.seconds, 3)
                waited = msgspec.structs.replace(
                    waited, ended=True, reason=end.reason, seconds=secs
                )
            results.append(waited)
        return results

    async def _signal(self, target: str, sig: str) -> SignalResult:
        try:
            link, proc = self._proc_for(target)
            reply = await link.call(lambda i: Signal(id=i, pid=proc.pid, signal=sig), Signalled)
        except (CallError, VerbError) as e:
            return SignalResult(target, False, str(e))
        if reply.proc is not None:
            self.cluster.update_proc(link.name, reply.proc)
        return SignalResult(proc.key, reply.delivered, reply.message)

    async def stop_procs(self, targets: Sequence[str]) -> list[SignalResult]:
        """Graceful stop: SIGINT to each process group."""
        return await self.signal(targets, "SIGINT")

    async def kill_procs(self, targets: Sequence[str]) -> list[SignalResult]:
        """Forceful stop: SIGKILL to each process group."""
        return await self.signal(targets, "SIGKILL")

    async def usage(self, node: str | None = None) -> list[NodeUsage]:
        """Per-process CPU time and RSS, and each node's children totals."""
        names = [node] if node else [n.name for n in self.cluster.nodes()]
        if node and not self.cluster.has_node(node):
            raise VerbError(f"unknown node: {node}")
        out = []
        for name in names:
            link = self.server.links.get(name) if self.server else None
            if link is None:
                continue
            try:
                reply = await link.call(lambda i: Usage(id=i), UsageReply)
            except CallError:
                continue
            for p in reply.procs:
                self.cluster.update_proc(name, p)
            views = [v for p in reply.procs if (v := self.cluster.proc(f"{name}:{p.pid}"))]
            out.append(
                NodeUsage(
                    node=name,
                    children_user=reply.children_user,
                    children_sys=reply.children_sys,
                    children_max_rss=reply.children_max_rss,
                    procs=views,
                )
            )
        if node and not out:
            raise VerbError(f"node {node} is {self.cluster.node_state(node)}: not connected")
        return out

    async def logs(self, target: str, tail: int = 10, offset: int | None = None) -> LogPiece:
        """The last ``tail`` lines of a process's log (or the bytes from ``offset``)."""
        link, proc = self._proc_for(target)
        try:
            reply = await link.call(
                lambda i: Logs(id=i, pid=proc.pid, tail=tail, offset=offset), LogChunk
            )
        except CallError as e:
            raise VerbError(str(e)) from None
        return LogPiece(reply.offset, reply.data, reply.eof, reply.size)

    async def read_log(
        self,
        target: str,
        offset: int | None = None,
        before: int | None = None,
        limit: int = 0,
        tail: int = 0,
        find: str = "",
    ) -> LogPiece:
        """One bounded page of a process's log, for a pager.

        From ``offset`` forwards, or the page that ends at ``before`` (its
        first line whole), or with neither the last ``tail`` lines; at most
        ``limit`` bytes (0: the worker's cap, 256 KiB).  The piece's ``size``
        is the log's size when the worker read it.  With ``find`` the worker
        searches for the next line holding it from ``offset`` (or the last one
        before ``before``): the piece is the page from that line, ``found`` its
        offset (-1: no such line; None: a worker that cannot search).
        """
        link, proc = self._proc_for(target)
        try:
            reply = await link.call(
                lambda i: Logs(
                    id=i,
                    pid=proc.pid,
                    tail=tail,
                    offset=offset,
                    before=before,
                    limit=limit,
                    find=find,
                ),
                LogChunk,
            )
        except CallError as e:
            raise VerbError(str(e)) from None
        return LogPiece(reply.offset, reply.data, reply.eof, reply.size, reply.found)

    async def follow(
        self, target: str, tail: int = 10, offset: int | None = None
    ) -> AsyncGenerator[LogPiece, None]:
        """Yield a process's log as it grows, until it ends and is drained.

        Pieces carry byte offsets: a reader that comes back asks again from
        its last offset and misses nothing, duplicates nothing.  A reader
        slower than the log is not buffered without end: its stream pauses
        (`master.server.Follow`) and resumes from its offset once it has
        caught up.
        """
        link, proc = self._proc_for(target)
        rid, stream = self._open_follow(link, proc.pid, tail, offset)
        try:
            while True:
                chunk = await stream.get()
                if chunk is None:
                    raise VerbError(f"node {link.name} disconnected")
                yield LogPiece(chunk.offset, chunk.data, chunk.eof, chunk.size)
                if chunk.eof:
                    return
                if stream.paused and stream.queue.empty():
                    rid, stream = self._open_follow(
                        link, proc.pid, 0, chunk.offset + len(chunk.data)
                    )
        finally:
            if link.streams.pop(rid, None) is not None and not link.conn.writer.is_closing():
                with contextlib.suppress(Exception):
                    unfollow = Unfollow(id=link.calls.next_id(), stream=rid, term=link.calls.term)
                    link.conn.send_nowait(unfollow)

    @staticmethod
    def _open_follow(
        link: WorkerLink, pid: int, tail: int, offset: int | None
    ) -> tuple[int, Follow]:
        """Ask ``link``'s worker to stream ``pid``'s log; the stream's id and queue."""
        if link.closed:
            raise VerbError(f"node {link.name} disconnected")
        rid, stream = link.calls.next_id(), Follow()
        link.streams[rid] = stream
        deadline = time.time() + link.window()
        ask = Logs(
            id=rid,
            deadline=deadline,
            term=link.calls.term,
            pid=pid,
            tail=tail,
            offset=offset,
            follow=True,
        )
        try:
            link.conn.send_nowait(ask)
        except ConnectionClosed:
            link.streams.pop(rid, None)
            raise VerbError(f"node {link.name} disconnected") from None
        return rid, stream

    async def remove(
        self,
        app: str,
        nodes: Sequence[str] = (),
        all_nodes: bool = False,
        force: bool = False,
        logs: bool = False,
    ) -> list[RemoveResult]:
        """Remove an app's executables and libraries from the chosen nodes.

        Every alive node by default, where a node without the app has nothing
        to remove (a named node without it is that node's error).  Refused on
        every node, nothing removed anywhere, while the app has running
        processes, unless ``force``, which stops them first (SIGINT, then
        SIGKILL).  Logs are kept unless ``logs``.
        """
        if not valid_app_name(app):
            raise VerbError(f"invalid app name {app!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        named = bool(nodes)
        picked = self.select_nodes(nodes, all_nodes or not nodes)
        links, unreachable = self.links(picked)
        if not force:
            running = {
                n: [p.key for p in self.cluster.procs(n) if p.app == app and p.alive]
                for n in picked
            }
            busy = {n: keys for n, keys in running.items() if keys}
            if busy:
                where = ", ".join(busy)
                return [
                    RemoveResult(
                        node=n,
                        error=(
                            f"app {app} has {len(busy[n])} running "
                            f"process{'es' if len(busy[n]) > 1 else ''} "
                            f"({', '.join(busy[n])}); use --force to stop them first"
                            if n in busy
                            else f"not removed: app {app} is running on {where}; use --force"
                        ),
                    )
                    for n in picked
                ]

        async def one(link: WorkerLink) -> RemoveResult:
            try:
                reply = await link.call(
                    lambda i: Remove(id=i, app=app, force=force, logs=logs), Removed, timeout=30
                )
            except CallError as e:
                return RemoveResult(node=link.name, error=str(e))
            if logs:  # the worker forgot the app's ended processes with their logs
                ended = [p.pid for p in self.cluster.procs(link.name) if p.app == app]
                self.cluster.forget_procs(link.name, [*ended, *reply.stopped])
            if reply.removed or reply.stopped:
                stopped = f", stopped {len(reply.stopped)}" if reply.stopped else ""
                what = f"{len(reply.removed)} file{'s' if len(reply.removed) != 1 else ''}"
                text = f"app {app} removed from {link.name}: {what}{stopped}"
                self.cluster.note("app.removed", link.name, text + (", logs too" if logs else ""))
            return RemoveResult(node=link.name, removed=reply.removed, stopped=reply.stopped)

        done = {r.node: r for r in await asyncio.gather(*(one(lk) for lk in links.values()))}
        results = [done.get(n) or RemoveResult(node=n, error=unreachable[n]) for n in picked]
        if named:
            return results
        missing = f"no such app: {app}"
        if all(r.error == missing for r in results):
            raise VerbError(missing)
        return [RemoveResult(node=r.node) if r.error == missing else r for r in results]
