"""The cluster model: nodes, their processes, and the event log.

The master owns this truth and publishes every change to subscribers as a
`Change` naming what moved; views pull immutable snapshots (`NodeView`,
`ProcView`) of just those rows.  Nothing here does I/O.

Node states (an explicit machine; every edge is in `_NODE_EDGES`)::

    alive   -> suspect   one beat missed
    suspect -> lost      two beats missed (no beat for 2H)
    suspect -> alive     beats resumed
    lost    -> alive     the worker came back (same or new connection)
    any     -> left      the worker said goodbye
    left    -> alive     it registered again
"""

from __future__ import annotations

import math
import operator
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from corral.master.names import split_target
from corral.transport.messages import (
    ALIVE_STATES,
    Metrics,
    NodeFacts,
    ProcInfo,
    ProcSample,
)

NodeState = Literal["alive", "suspect", "lost", "left"]
NODE_STATES: tuple[NodeState, ...] = ("alive", "suspect", "lost", "left")

_NODE_EDGES: dict[NodeState, frozenset[NodeState]] = {
    "alive": frozenset({"suspect", "lost", "left"}),
    "suspect": frozenset({"alive", "lost", "left"}),
    "lost": frozenset({"alive", "left"}),
    "left": frozenset({"alive"}),
}

HISTORY = 60  # CPU samples kept per node (one a beat: the last minute at 1 Hz)
TREND_SPAN = 600.0  # seconds of graphs kept per node and per process (10 minutes)
TREND_BUCKET = 5.0  # seconds one graph point stands for (the mean of its beats)
STATE_HISTORY = 24  # state changes kept per process (the first and the newest)
TAIL_LINES = 20  # log lines kept with an ended process's certificate
TAIL_LINE_CHARS = 400  # ... each cut to this many characters
NODE_SERIES = ("cpu", "mem", "load", "procs")
PROC_SERIES = ("cpu", "rss")


# gc=False (also ProcView): snapshots hold scalars and tuples only, never a
# cycle; a busy dashboard makes thousands a second.
class NodeView(msgspec.Struct, frozen=True, gc=False):
    """Immutable snapshot of one node, for views and the API."""

    name: str
    address: str
    state: NodeState
    hostname: str
    cpus: int
    mem_total: int
    mem_used: int
    cpu_percent: float
    load1: float
    last_beat: float  # Unix time of the last beat (or registration)
    procs_running: int
    procs_total: int
    ssh_host: str
    ssh_port: int
    boot_id: str
    root: str
    cpu_history: tuple[float, ...] = ()
    version: str = ""  # the worker's corral version
    worker_pid: int = 0
    kernel: str = ""  # the node's kernel release
    mem_offer: int = 0  # bytes offered to jobs (worker --mem)

    def beat_age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.last_beat)


class ProcView(msgspec.Struct, frozen=True, gc=False):
    """Immutable snapshot of one process; ``state`` is "lost" while its node is."""

    node: str
    pid: int
    launch: str
    app: str
    argv: tuple[str, ...]
    state: str
    reason: str
    started_at: float
    ended_at: float | None
    exit_code: int | None
    signal: str | None
    core_dumped: bool
    cpu_user: float
    cpu_sys: float
    rss: int
    max_rss: int
    # Percent of one core between the last two samples; 0.0 before two
    # samples exist and once the process ended.
    cpu_percent: float = 0.0
    launch_key: str = ""  # the launch's request key (a job's replica is found by it)

    @property
    def key(self) -> str:
        return f"{self.node}:{self.pid}"

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    @property
    def cpu_time(self) -> float:
        return self.cpu_user + self.cpu_sys

    def run_time(self, now: float | None = None) -> float:
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return max(0.0, end - self.started_at)


class Event(msgspec.Struct, frozen=True):
    """One line of the event log."""

    ts: float
    kind: str  # node.joined node.suspect node.lost node.back node.left node.refused
    # proc.launched proc.ended
    node: str
    message: str
    pid: int | None = None


class Certificate(msgspec.Struct, frozen=True):
    """What is kept of an ended process: its end, its states, its last log lines.

    ``log_tail`` is None until the master has fetched it (`set_log_tail`);
    ``log_error`` says why it could not be.
    """

    proc: ProcView
    states: tuple[tuple[float, str], ...]
    log_tail: tuple[str, ...] | None = None
    log_error: str = ""


class Change(msgspec.Struct, frozen=True):
    """What moved in one mutation: node names, process keys, new events."""

    nodes: frozenset[str] = frozenset()
    procs: frozenset[str] = frozenset()
    events: tuple[Event, ...] = ()
    removed_procs: frozenset[str] = frozenset()
    history: bool = False  # the ring of recent events was replaced whole (`replace_events`)


Listener = Callable[[Change], None]


class _Node:
    """Mutable per-node record, private to the model."""

    def __init__(self, facts: NodeFacts, address: str, now: float) -> None:
        self.facts = facts
        self.address = address
        self.state: NodeState = "alive"
        self.last_beat = now
        self.last_beat_mono = time.monotonic()
        self.metrics = Metrics(mem_total=facts.mem_total)
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.trend = Trend(len(NODE_SERIES))
        self.procs: dict[int, ProcInfo] = {}
        self.tracks: dict[int, _Track] = {}  # live processes' samples, by pid


class Trend:
    """A few series over the last `TREND_SPAN` seconds, one point per `TREND_BUCKET`.

    A point is the mean of the samples of its bucket; the open bucket is
    summed apart (a beat costs a few additions) and shows as the newest
    point.  Closed points are float32 in arrays, so a node's four series
    cost about 2 KB, whatever the beat rate.
    """

    __slots__ = ("_count", "_open", "_slots", "_sums", "_until", "_values", "bucket", "capacity")

    def __init__(self, series: int, span: float = TREND_SPAN, bucket: float = TREND_BUCKET) -> None:
        self.bucket = bucket
        self.capacity = max(1, int(span / bucket))
        self._slots = array("i")  # bucket number of each closed point (2**31 * 5 s: ok)
        self._values = [array("f") for _ in range(series)]
        self._open = -1  # the open bucket's number (-1: none yet)
        self._until = float("-inf")  # ... and when it closes
        self._sums = [0.0] * series  # ... and its samples' sums and count
        self._count = 0

    def add(self, now: float, *values: float) -> None:
        if now < self._until:  # the open bucket (or a clock stepped back): hot, 2 ops
            self._count += 1
            self._sums = list(map(operator.add, self._sums, values))
            return
        if self._count:
            self._close()
        slot = int(now // self.bucket)
        self._open, self._sums, self._count = slot, list(values), 1
        self._until = (slot + 1) * self.bucket

    def add2(self, now: float, a: float, b: float) -> None:
        """`add` of two series, for the hot path (a process's sample)."""
        if now < self._until:
            self._count += 1
            sums = self._sums
            sums[0] += a
            sums[1] += b
            return
        self.add(now, a, b)

    def _close(self) -> None:
        slots, count = self._slots, self._count
        slots.append(self._open)
        for series, total in zip(self._values, self._sums, strict=True):
            series.append(total / count)
        first = self._open - self.capacity + 2  # room for the next open bucket
        drop = 0
        while drop < len(slots) and slots[drop] < first:
            drop += 1
        if drop:
            del slots[:drop]
            for series in self._values:
                del series[:drop]

    def series(self, index: int, now: float) -> list[float]:
        """Series ``index``'s points of the last `TREND_SPAN` seconds, oldest first."""
        first = int(now // self.bucket) - self.capacity + 1
        slots = self._slots
        skip = 0
        while skip < len(slots) and slots[skip] < first:
            skip += 1
        out = self._values[index].tolist()[skip:]
        if self._count and self._open >= first:
            out.append(self._sums[index] / self._count)
        return out


class _Track:
    """What the master keeps of one process beyond the worker's record."""

    __slots__ = (
        "cpu_percent",
        "last_at",
        "last_cpu",
        "launch",
        "log_error",
        "log_tail",
        "states",
        "trend",
    )

    def __init__(self, launch: str, now: float, state: str) -> None:
        self.launch = launch
        self.trend = Trend(len(PROC_SERIES))
        self.states: deque[tuple[float, str]] = deque([(now, state)], maxlen=STATE_HISTORY)
        self.last_at = 0.0  # wall time of the last sample (0: none yet) ...
        self.last_cpu = 0.0  # ... and the CPU time it said
        self.cpu_percent = 0.0
        self.log_tail: tuple[str, ...] | None = None
        self.log_error = ""

    def note_state(self, now: float, state: str) -> None:
        """Record a change of state; running and sleeping are one state here.

        The kernel flips a live process between the two many times a second:
        the history keeps what an operator acts on (stopped, lost, ended).
        """
        if _phase(state) != _phase(self.states[-1][1]):
            self.states.append((now, state))


_LIVE = frozenset({"running", "sleeping"})  # one state in a process's history


def _phase(state: str) -> str:
    return "running" if state == "sleeping" else state


class Cluster:
    """Nodes and processes, changed only through methods that publish."""

    def __init__(
        self,
        event_sink: Callable[[Event], None] | None = None,
        keep_ended: int = 500,
        keep_ended_for: float = 7 * 86400.0,
    ) -> None:
        # The history rule: ended processes kept per node, newest first, none
        # older than keep_ended_for seconds.  Workers are told the same rule.
        self.keep_ended = keep_ended
        self.keep_ended_for = keep_ended_for
        self._nodes: dict[str, _Node] = {}
        self._listeners: list[Listener] = []
        self._event_sink = event_sink
        self.events: deque[Event] = deque(maxlen=1000)
        # Ended processes' tracks (graphs, states, log tail) by key, oldest
        # end first; at most keep_ended in all, whatever the number of nodes.
        self._ended: OrderedDict[str, _Track] = OrderedDict()

    # --- subscription -------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _publish(self, change: Change) -> None:
        for listener in list(self._listeners):
            listener(change)

    def replace_events(self, events: Iterable[Event]) -> None:
        """The ring of recent events becomes ``events`` (oldest first; a new leader's read
        of what earlier leaders noted); views of it reload."""
        self.events.clear()
        self.events.extend(events)
        self._publish(Change(history=True))

    def _event(self, kind: str, node: str, message: str, pid: int | None = None) -> Event:
        ev = Event(ts=time.time(), kind=kind, node=node, message=message, pid=pid)
        self.events.append(ev)
        if self._event_sink is not None:
            self._event_sink(ev)
        return ev

    # --- queries --------------------------------------------------------
    def node_names(self) -> list[str]:
        return sorted(self._nodes)

    def has_node(self, name: str) -> bool:
        return name in self._nodes

    def node_state(self, name: str) -> NodeState | None:
        node = self._nodes.get(name)
        return node.state if node else None

    def node(self, name: str) -> NodeView:
        n = self._nodes[name]
        running = sum(1 for p in n.procs.values() if p.state in ALIVE_STATES)
        return NodeView(
            name=name,
            address=n.address,
            state=n.state,
            hostname=n.facts.hostname,
            cpus=n.facts.cpus,
            mem_total=n.metrics.mem_total or n.facts.mem_total,
            mem_used=n.metrics.mem_used,
            cpu_percent=n.metrics.cpu_percent,
            load1=n.metrics.load1,
            last_beat=n.last_beat,
            procs_running=running,
            procs_total=len(n.procs),
            ssh_host=n.facts.ssh_host,
            ssh_port=n.facts.ssh_port,
            boot_id=n.facts.boot_id,
            root=n.facts.root,
            cpu_history=tuple(n.history),
            version=n.facts.version,
            worker_pid=n.facts.pid,
            kernel=n.facts.kernel,
            mem_offer=self.mem_offer(name),
        )

    def mem_offer(self, name: str) -> int:
        """Bytes ``name`` offers to jobs: its ``--mem``, else its MemTotal less 10%."""
        facts = self._nodes[name].facts
        return facts.mem_offer if facts.mem_offer > 0 else facts.mem_total * 9 // 10

    def nodes(self) -> list[NodeView]:
        return [self.node(name) for name in sorted(self._nodes)]

    def _find(self, key: str) -> tuple[str, _Node, ProcInfo] | None:
        """``NODE:PID`` -> (node name, node, process); None if unknown."""
        parts = split_target(key)
        if parts is None or (n := self._nodes.get(parts[0])) is None:
            return None
        p = n.procs.get(parts[1])
        return None if p is None else (parts[0], n, p)

    def proc(self, key: str) -> ProcView | None:
        found = self._find(key)
        return None if found is None else _view(*found)

    def node_trend(self, name: str, now: float | None = None) -> dict[str, list[float]]:
        """The node's graphs over the last `TREND_SPAN` seconds: `NODE_SERIES` -> points.

        One point per `TREND_BUCKET` seconds, oldest first; {} for an unknown node.
        """
        n = self._nodes.get(name)
        if n is None:
            return {}
        t = time.time() if now is None else now
        return {s: n.trend.series(i, t) for i, s in enumerate(NODE_SERIES)}

    def proc_trend(self, key: str, now: float | None = None) -> dict[str, list[float]]:
        """A process's CPU % and RSS over its last `TREND_SPAN` seconds ({} if none kept)."""
        track = self._track(key)
        if track is None:
            return {}
        t = time.time() if now is None else now
        if key in self._ended and track.last_at:
            t = track.last_at  # an ended process's graph stops where it ended
        return {s: track.trend.series(i, t) for i, s in enumerate(PROC_SERIES)}

    def proc_states(self, key: str) -> list[tuple[float, str]]:
        """A process's states with the (Unix) time each began, oldest first.

        Running and sleeping count as one; a lost node's processes are
        "lost" while it is.  Bounded: the newest `STATE_HISTORY` changes.
        """
        found = self._find(key)
        if found is None:
            return []
        track = self._track(key)
        if track is not None:
            return list(track.states)
        p = found[2]  # seen only once it had ended (the master started later)
        out = [(p.started_at, "running")]
        if p.state not in ALIVE_STATES:
            out.append((p.ended_at or p.started_at, p.state))
        return out

    def certificate(self, key: str) -> Certificate | None:
        """An ended process's death certificate; None while it lives or if unknown."""
        view = self.proc(key)
        if view is None or view.alive or view.state == "lost":
            return None
        track = self._ended.get(key)
        if track is not None and track.launch != view.launch:
            track = None
        return Certificate(
            proc=view,
            states=tuple(self.proc_states(key)),
            log_tail=None if track is None else track.log_tail,
            log_error="" if track is None else track.log_error,
        )

    def set_log_tail(self, key: str, launch: str, lines: Iterable[str], error: str = "") -> bool:
        """Keep the last log lines of ended ``key`` (launch ``launch``); False if not kept."""
        track = self._ended.get(key)
        if track is None or track.launch != launch:
            return False
        kept = [line[:TAIL_LINE_CHARS] for line in lines]
        track.log_tail, track.log_error = tuple(kept[-TAIL_LINES:]), error
        self._publish(Change(procs=frozenset({key})))
        return True

    def _track(self, key: str) -> _Track | None:
        found = self._find(key)
        if found is None:
            return None
        _, n, p = found
        track = n.tracks.get(p.pid) or self._ended.get(key)
        return track if track is not None and track.launch == p.launch else None

    def _sync_track(self, name: str, n: _Node, info: ProcInfo, now: float) -> None:
        """Bring the track of ``info`` up to date: made at launch, retired at its end."""
        pid = info.pid
        track = n.tracks.get(pid)
        if track is not None and track.launch != info.launch:
            del n.tracks[pid]  # the pid was reused: that launch is gone from the table
            track = None
        key = f"{name}:{pid}"
        if info.state in ALIVE_STATES:
            if track is None:
                self._ended.pop(key, None)
                n.tracks[pid] = _Track(info.launch, min(info.started_at, now), info.state)
            else:
                track.note_state(now, info.state)
            return
        if track is None:
            return
        del n.tracks[pid]
        track.note_state(info.ended_at or now, info.state)
        track.cpu_percent = 0.0
        self._ended[key] = track
        self._ended.move_to_end(key)
        while len(self._ended) > self.keep_ended:
            self._ended.popitem(last=False)

    def _drop_tracks(self, name: str, n: _Node, pids: Iterable[int]) -> None:
        """Forget what is kept of processes gone from ``n``'s table."""
        for pid in pids:
            n.tracks.pop(pid, None)
            self._ended.pop(f"{name}:{pid}", None)

    def proc_state(self, key: str) -> tuple[str, int | None] | None:
        """``key``'s raw state and exit code, without a snapshot; None if unknown.

        The state is the worker's: "lost" is a view's (see `proc`).
        """
        found = self._find(key)
        return None if found is None else (found[2].state, found[2].exit_code)

    def procs(self, node: str | None = None, include_ended: bool = True) -> list[ProcView]:
        out = []
        for name in [node] if node else sorted(self._nodes):
            n = self._nodes.get(name)
            if n is None:
                continue
            for info in n.procs.values():
                if include_ended or info.state in ALIVE_STATES:
                    out.append(_view(name, n, info))
        return out

    def last_beat_mono(self, name: str) -> float:
        return self._nodes[name].last_beat_mono

    def silent_nodes(self, since: float) -> list[tuple[str, NodeState, float]]:
        """Alive and suspect nodes with no beat since ``since`` (monotonic), by name:
        (name, state, last beat).  One pass, for the liveness tick: most nodes
        have beaten since, and cost one comparison each."""
        out: list[tuple[str, NodeState, float]] = [
            (name, n.state, n.last_beat_mono)
            for name, n in self._nodes.items()
            if n.last_beat_mono < since and n.state in ("alive", "suspect")
        ]
        out.sort()
        return out

    # --- node lifecycle -------------------------------------------------
    def register(self, facts: NodeFacts, address: str, procs: Iterable[ProcInfo]) -> None:
        """A worker (re)connected with its full state: replace its process table."""
        now = time.time()
        name = facts.name
        old = self._nodes.get(name)
        node = _Node(facts, address, now)
        node.procs = {p.pid: _sane_proc(p) for p in procs}
        if old is not None:
            node.history, node.trend, node.tracks = old.history, old.trend, old.tracks
            self._drop_tracks(name, node, [pid for pid in old.procs if pid not in node.procs])
            kind, what = (
                ("node.back", "came back")
                if old.state != "left"
                else (
                    "node.joined",
                    "rejoined",
                )
            )
            gone = {f"{name}:{pid}" for pid in old.procs if pid not in node.procs}
        else:
            kind, what, gone = "node.joined", "joined", set()
        self._nodes[name] = node
        for info in node.procs.values():
            self._sync_track(name, node, info, now)
        gone |= self._prune(name, node)
        ev = self._event(kind, name, f"{name} {what} from {address}")
        keys = frozenset(f"{name}:{pid}" for pid in node.procs)
        self._publish(
            Change(nodes=frozenset({name}), procs=keys, events=(ev,), removed_procs=frozenset(gone))
        )

    def set_node_state(self, name: str, state: NodeState, why: str = "") -> bool:
        """Move a node along an edge of the state machine; False if not allowed."""
        n = self._nodes.get(name)
        if n is None or n.state == state or state not in _NODE_EDGES[n.state]:
            return False
        before, n.state = n.state, state
        if state == "lost" or before == "lost":
            now = time.time()
            for info in n.procs.values():
                track = n.tracks.get(info.pid)
                if track is not None:
                    track.note_state(now, "lost" if state == "lost" else info.state)
        kind = "node.back" if state == "alive" else f"node.{state}"
        text = why or f"{name} {before} -> {state}"
        ev = self._event(kind, name, text)
        # Processes show as "lost" with their node, so their rows change too.
        keys = frozenset(f"{name}:{pid}" for pid in n.procs)
        self._publish(Change(nodes=frozenset({name}), procs=keys, events=(ev,)))
        return True

    def beat(self, name: str, metrics: Metrics, samples: Iterable[ProcSample] = ()) -> None:
        """Record a heartbeat and its samples; a suspect or lost node is alive again."""
        n = self._nodes.get(name)
        if n is None:
            return
        n.last_beat = now = time.time()
        n.last_beat_mono = time.monotonic()
        n.metrics = metrics = _sane(metrics)
        n.history.append(metrics.cpu_percent)
        n.trend.add(
            now, metrics.cpu_percent, float(metrics.mem_used), metrics.load1, metrics.procs_alive
        )
        changed = set()
        procs, tracks = n.procs, n.tracks
        for s in samples:
            pid = s.pid
            info = procs.get(pid)
            if info is None or info.state not in ALIVE_STATES:
                continue
            cpu_user, cpu_sys, state, rss = s.cpu_user, s.cpu_sys, s.state, s.rss
            if not (math.isfinite(cpu_user) and math.isfinite(cpu_sys)):
                continue  # a broken sample: keep the last good figures
            moved = (info.state, info.rss, info.cpu_user, info.cpu_sys) != (
                state,
                rss,
                cpu_user,
                cpu_sys,
            )
            track = tracks.get(pid)
            if track is not None and track.launch == info.launch:
                # CPU % over the wall time since the last sample (inlined: hot).
                cpu, last_at = cpu_user + cpu_sys, track.last_at
                if last_at and now > last_at:
                    percent = (cpu - track.last_cpu) / (now - last_at) * 100.0
                    if percent < 0.0:
                        percent = 0.0
                    if percent != track.cpu_percent:
                        track.cpu_percent, moved = percent, True
                track.last_at, track.last_cpu = now, cpu
                track.trend.add2(now, track.cpu_percent, rss)
                if state != info.state and not (state in _LIVE and info.state in _LIVE):
                    track.note_state(now, state)
            if moved:
                procs[pid] = msgspec.structs.replace(
                    info,
                    state=state,
                    cpu_user=cpu_user,
                    cpu_sys=cpu_sys,
                    rss=rss,
                    max_rss=max(info.max_rss, s.max_rss),
                )
                changed.add(f"{name}:{pid}")
        if n.state in ("suspect", "lost"):
            self.set_node_state(name, "alive", f"{name} heartbeats resumed")
        self._publish(Change(nodes=frozenset({name}), procs=frozenset(changed)))

    def update_proc(self, name: str, info: ProcInfo) -> None:
        """A process was launched or changed state on ``name``."""
        n = self._nodes.get(name)
        if n is None:
            return
        info = _sane_proc(info)
        old = n.procs.get(info.pid)
        if old is not None and _stale(old, info):
            return
        n.procs[info.pid] = info
        self._sync_track(name, n, info, time.time())
        events: tuple[Event, ...] = ()
        key = f"{name}:{info.pid}"
        cmd = " ".join(info.argv)
        if old is None or old.launch != info.launch:
            events = (self._event("proc.launched", name, f"{key} launched: {cmd}", info.pid),)
        gone: frozenset[str] = frozenset()
        if info.state not in ALIVE_STATES and (old is None or old.state in ALIVE_STATES):
            ended = self._event("proc.ended", name, f"{key} {info.reason}: {cmd}", info.pid)
            events = (*events, ended)
            gone = frozenset(self._prune(name, n))
        self._publish(
            Change(
                procs=frozenset({key}) - gone,
                nodes=frozenset({name}),
                events=events,
                removed_procs=gone,
            )
        )

    def _prune(self, name: str, n: _Node) -> set[str]:
        """Apply the history rule to ``n``'s ended processes; the keys dropped."""
        ended = [p for p in n.procs.values() if p.state not in ALIVE_STATES]
        if not ended:
            return set()
        ended.sort(key=_end_order)
        cutoff = time.time() - self.keep_ended_for
        excess = max(0, len(ended) - self.keep_ended)
        drop = [p for i, p in enumerate(ended) if i < excess or _ended_before(p, cutoff)]
        for p in drop:
            del n.procs[p.pid]
        self._drop_tracks(name, n, [p.pid for p in drop])
        return {f"{name}:{p.pid}" for p in drop}

    def expire(self) -> None:
        """Drop ended processes past the age of the history rule (call now and then)."""
        for name, n in self._nodes.items():
            gone = self._prune(name, n)
            if gone:
                self._publish(Change(nodes=frozenset({name}), removed_procs=frozenset(gone)))

    def forget_procs(self, name: str, pids: Iterable[int]) -> None:
        """Drop ended processes (their app was removed)."""
        n = self._nodes.get(name)
        if n is None:
            return
        pids = [pid for pid in pids if n.procs.pop(pid, None) is not None]
        self._drop_tracks(name, n, pids)
        gone = {f"{name}:{pid}" for pid in pids}
        if gone:
            self._publish(Change(nodes=frozenset({name}), removed_procs=frozenset(gone)))

    def note(self, kind: str, node: str, message: str) -> None:
        """Log an event that changes no row (a refused worker, say)."""
        self._publish(Change(events=(self._event(kind, node, message),)))


def _finite(x: float, top: float) -> float:
    """``x`` clamped into [0, top]; NaN is 0."""
    return 0.0 if math.isnan(x) else min(max(x, 0.0), top)


def _sane(m: Metrics) -> Metrics:
    """``m`` with every figure a worker could get wrong (NaN, inf, negative) clamped."""
    # Chained comparisons: NaN fails every one, so one line checks it all (2,000 beats/s).
    if (
        0.0 <= m.cpu_percent <= 100.0
        and 0.0 <= m.load1 <= 1e6
        and min(m.mem_used, m.mem_total, m.apps, m.procs_alive) >= 0
    ):
        return m
    return Metrics(
        cpu_percent=_finite(m.cpu_percent, 100.0),
        mem_used=max(m.mem_used, 0),
        mem_total=max(m.mem_total, 0),
        load1=_finite(m.load1, 1e6),
        apps=max(m.apps, 0),
        procs_alive=max(m.procs_alive, 0),
    )


def _sane_proc(p: ProcInfo) -> ProcInfo:
    """``p`` with non-finite or negative times clamped (a worker's word is not trusted)."""
    if (
        0.0 <= p.started_at <= 1e12
        and 0.0 <= p.cpu_user <= 1e12
        and 0.0 <= p.cpu_sys <= 1e12
        and (p.ended_at is None or 0.0 <= p.ended_at <= 1e12)
        and min(p.rss, p.max_rss) >= 0
    ):
        return p
    return msgspec.structs.replace(
        p,
        started_at=_finite(p.started_at, 1e12),
        ended_at=None if p.ended_at is None else _finite(p.ended_at, 1e12),
        cpu_user=_finite(p.cpu_user, 1e12),
        cpu_sys=_finite(p.cpu_sys, 1e12),
        rss=max(p.rss, 0),
        max_rss=max(p.max_rss, 0),
    )


def _ended_before(p: ProcInfo, cutoff: float) -> bool:
    """True when ``p`` ended before ``cutoff``; an unknown end time is not old."""
    return p.ended_at is not None and p.ended_at < cutoff


def _end_order(p: ProcInfo) -> tuple[float, str]:
    """Oldest end first; the worker orders its records the same way."""
    return (p.ended_at or 0.0, p.launch)


def _stale(old: ProcInfo, new: ProcInfo) -> bool:
    """True when ``new`` is older news than ``old`` and must not replace it.

    Replies and events race: a launch or signal reply can be applied after
    the exit event that followed it.  An ended launch never comes back to
    life, and a live process is not replaced by news of an older launch
    that had the same (since reused) pid.
    """
    if old.launch == new.launch:
        return old.state not in ALIVE_STATES and new.state in ALIVE_STATES
    return old.state in ALIVE_STATES and new.started_at < old.started_at


def _view(node: str, n: _Node, p: ProcInfo) -> ProcView:
    state: str = p.state
    cpu = 0.0
    if p.state in ALIVE_STATES:
        track = n.tracks.get(p.pid)
        if track is not None and track.launch == p.launch:
            cpu = track.cpu_percent
        if n.state == "lost":
            state, cpu = "lost", 0.0
    return ProcView(
        node=node,
        pid=p.pid,
        launch=p.launch,
        app=p.app,
        argv=tuple(p.argv),
        state=state,
        reason=p.reason,
        started_at=p.started_at,
        ended_at=p.ended_at,
        exit_code=p.exit_code,
        signal=p.signal,
        core_dumped=p.core_dumped,
        cpu_user=p.cpu_user,
        cpu_sys=p.cpu_sys,
        rss=p.rss,
        max_rss=p.max_rss,
        cpu_percent=cpu,
        launch_key=p.key,
    )
