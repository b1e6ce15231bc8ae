"""Job placement: replicas onto nodes by requested memory, in strict FIFO order.

Pure bookkeeping, no I/O and no clock: `master.jobs` feeds it the nodes
(what each offers to jobs, and whether it can take work) and the jobs, and
acts on the placements it returns.

- A node's **free** memory here is its offer less what placed replicas
  hold; the live free memory a node reports is another figure, never
  used for placement.
- **Bin-packing** (the default) puts each replica on the fullest node that
  still fits it (best fit); ``spread`` puts at most one replica on a node.
  A job is placed whole or not at all.
- The **queue** is strict FIFO: only its head is tried, and while it does
  not fit, every job behind it waits too.  `drain` is called when capacity
  changes (a replica ended, a node joined or came back), never on a timer;
  it costs the placements it makes plus one failed try.

Usable nodes are kept sorted by (free, name), so a best fit is a binary
search: placing a replica costs O(log n) plus a list insert.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass

from corral.master.text import human_bytes

REASON_NODES = 8  # nodes named in a queued job's reason; the rest are counted


@dataclass(frozen=True, slots=True)
class Demand:
    """What a job asks for: ``replicas`` times ``mem`` bytes, spread or packed."""

    job: int
    replicas: int
    mem: int
    spread: bool = False


@dataclass(slots=True)
class Slot:
    """One node as placement sees it."""

    name: str
    offer: int  # bytes offered to jobs
    held: int = 0  # bytes held by placed, unfinished replicas
    state: str = "alive"  # the node's state; only "alive" takes new replicas

    @property
    def free(self) -> int:
        return self.offer - self.held

    @property
    def usable(self) -> bool:
        return self.state == "alive"


class Scheduler:
    """Nodes, what replicas hold on them, and the queue of jobs waiting for room."""

    def __init__(self) -> None:
        self.slots: dict[str, Slot] = {}
        self.queue: OrderedDict[int, Demand] = OrderedDict()  # job id -> demand, FIFO
        self._ready: list[tuple[int, str]] = []  # (free, name) of usable nodes, sorted
        self._max_offer = -1  # -1: to be worked out again

    # --- nodes -------------------------------------------------------------
    def set_node(self, name: str, offer: int, state: str) -> bool:
        """Add or update a node; True if what it can take changed (worth a `drain`)."""
        slot = self.slots.get(name)
        if slot is None:
            self._max_offer = -1
            slot = self.slots[name] = Slot(name, max(0, offer), 0, state)
            if slot.usable:
                bisect.insort(self._ready, (slot.free, name))
            return slot.usable
        offer = max(0, offer)
        if (slot.offer, slot.state) == (offer, state):
            return False
        self._max_offer = -1
        self._unready(slot)
        before = slot.usable, slot.free
        slot.offer, slot.state = offer, state
        self._enready(slot)
        return (slot.usable, slot.free) != before

    def max_offer(self) -> int:
        """The largest offer of any known node (cached until a node changes)."""
        if self._max_offer < 0:
            self._max_offer = max((slot.offer for slot in self.slots.values()), default=0)
        return self._max_offer

    def forget_node(self, name: str) -> None:
        slot = self.slots.pop(name, None)
        self._max_offer = -1
        if slot is not None:
            self._unready(slot)

    def hold(self, node: str, mem: int) -> None:
        """A replica placed on ``node`` (by `drain`, or found running after a restart)."""
        slot = self.slots.get(node)
        if slot is None:  # a node not (yet) known: it holds once it registers
            slot = self.slots[node] = Slot(node, 0, 0, "unknown")
        self._unready(slot)
        slot.held += mem
        self._enready(slot)

    def release(self, node: str, mem: int) -> None:
        """A replica on ``node`` ended: its memory is free for the queue again."""
        slot = self.slots.get(node)
        if slot is None:
            return
        self._unready(slot)
        slot.held = max(0, slot.held - mem)
        self._enready(slot)

    def _unready(self, slot: Slot) -> None:
        if slot.usable:
            i = bisect.bisect_left(self._ready, (slot.free, slot.name))
            if i < len(self._ready) and self._ready[i] == (slot.free, slot.name):
                del self._ready[i]

    def _enready(self, slot: Slot) -> None:
        if slot.usable:
            bisect.insort(self._ready, (slot.free, slot.name))

    # --- the queue -----------------------------------------------------------
    def enqueue(self, demand: Demand) -> None:
        """``demand`` joins the tail of the queue."""
        self.queue[demand.job] = demand

    def dequeue(self, job: int) -> bool:
        """Take a job out of the queue (cancelled); False if it was not queued."""
        return self.queue.pop(job, None) is not None

    def position(self, job: int) -> int:
        """1 for the head of the queue; 0 if the job is not queued."""
        for i, queued in enumerate(self.queue, 1):
            if queued == job:
                return i
        return 0

    def positions(self) -> dict[int, int]:
        """Every queued job's position, at once (1: the head)."""
        return {job: i for i, job in enumerate(self.queue, 1)}

    def drain(self) -> list[tuple[Demand, list[str]]]:
        """Place jobs from the head of the queue while they fit; each with its nodes.

        The memory of every replica placed is held at once.
        """
        placed = []
        while self.queue:
            demand = next(iter(self.queue.values()))
            nodes = self._place(demand)
            if nodes is None:
                break
            del self.queue[demand.job]
            placed.append((demand, nodes))
        return placed

    def try_place(self, d: Demand) -> list[str] | None:
        """Where ``d`` would go now (a node per replica), changing nothing; None if it waits."""
        picks = self._walk(d)
        return None if picks is None else [self._ready[i][1] for i, n in picks for _ in range(n)]

    def _walk(self, d: Demand) -> list[tuple[int, int]] | None:
        """The best fit for ``d``: (index in the ready list, replicas there), or None.

        Replicas are alike, so the best fit for each in turn is to fill the
        node with the least room that fits one, then the next: a walk up
        the sorted list from the first node with room.
        """
        ready, mem, left = self._ready, d.mem, d.replicas
        picks: list[tuple[int, int]] = []
        i = bisect.bisect_left(ready, (mem, ""))
        while left and i < len(ready):
            take = 1 if d.spread else min(left, ready[i][0] // mem)
            picks.append((i, take))
            left -= take
            i += 1
        return None if left else picks

    def _place(self, d: Demand) -> list[str] | None:
        """Hold room for every replica of ``d`` on the best-fitting nodes, or for none."""
        picks = self._walk(d)
        if picks is None:
            return None
        ready = self._ready
        nodes: list[str] = []
        touched = []
        for i, take in picks:
            name = ready[i][1]
            nodes.extend([name] * take)
            touched.append((self.slots[name], take))
        del ready[picks[0][0] : picks[-1][0] + 1]  # the walk covered a contiguous run
        for slot, take in touched:
            slot.held += take * d.mem
            bisect.insort(ready, (slot.free, slot.name))
        return nodes

    # --- reasons -------------------------------------------------------------
    def never_fits(self, d: Demand) -> str:
        """Why ``d`` could not run on any known node even empty ("" if one could take a replica).

        Every known node counts, lost ones too (they may come back).  A job
        that wants more room than the nodes have together waits instead:
        more nodes may join.
        """
        if not self.slots or self.max_offer() >= d.mem:
            return ""  # with no node known yet, the job waits for one
        return f"can never run: {self.needs(d)}; {self.breakdown(d, free=False)}"

    def reason(self, job: int) -> str:
        """Why a queued job waits: its own shortfall at the head, else the job ahead."""
        if job not in self.queue:
            return ""
        head = next(iter(self.queue))
        if head != job:
            return f"behind job {head}"
        d = self.queue[job]
        return f"{self.needs(d)}; {self.breakdown(d)}"

    @staticmethod
    def needs(d: Demand) -> str:
        spread = " on separate nodes" if d.spread else ""
        return f"needs {d.replicas} x {human_bytes(d.mem)}{spread}"

    def breakdown(self, d: Demand, free: bool = True) -> str:
        """Each node's room for ``d``, most room first: "n1 1.5G free of 4.0G, n2 lost"."""
        if not self.slots:
            return "no nodes have joined"
        slots = sorted(self.slots.values(), key=lambda s: (not s.usable, -s.free, s.name))
        parts = []
        for slot in slots[:REASON_NODES]:
            if free and not slot.usable:
                parts.append(f"{slot.name} {slot.state}")
            elif free:
                parts.append(
                    f"{slot.name} {human_bytes(slot.free)} free of {human_bytes(slot.offer)}"
                )
            else:
                parts.append(f"{slot.name} offers {human_bytes(slot.offer)}")
        if len(slots) > REASON_NODES:
            parts.append(f"{len(slots) - REASON_NODES} more nodes")
        return ", ".join(parts)
