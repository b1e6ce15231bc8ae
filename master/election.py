"""Leader election among masters on etcd: one lease each, one election key.

Each master holds a lease (TTL ``lease`` seconds, renewed every TTL/3) and
keeps ``/corral/masters/NAME`` on it (who it is, where workers and clients
reach it).  The leader is the master whose lease holds ``/corral/leader``,
created by a transaction that succeeds only while the key is absent; its
**term** is that key's create revision, which only grows.  A standby tries
again every `POLL` seconds, so it leads within the old lease's TTL plus a
poll after the leader dies.

The leader *acts* (accepts workers, schedules, commands) only while its
last successful renewal was sent less than `RENEW_DEADLINE` of the TTL
ago: two renewals missed and it stops, a third of a TTL before its lease
can expire and another master can win (client-go's RenewDeadline <
LeaseDuration).  `acting` reads the clock itself, so a leader woken from
SIGSTOP knows at once that it may no longer act.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.master.etcd import ELECTION_KEY, MASTERS_PREFIX, Etcd, EtcdError, KeyValue

log = logging.getLogger("corral.master")

POLL = 0.25  # seconds between a standby's campaigns, and the loop's tick
RENEW_DEADLINE = 2 / 3  # of the TTL: past this since the last renewal sent, the leader stops


@dataclass(frozen=True)
class MasterInfo:
    """One master as it announces itself in etcd."""

    name: str
    listen: str
    api: str
    since: float = 0.0  # leader since (the leader key), or started (a master's key)
    term: int = 0

    def encode(self) -> bytes:
        data = {"name": self.name, "listen": self.listen, "api": self.api, "since": self.since}
        return json.dumps(data).encode()

    @classmethod
    def decode(cls, kv: KeyValue) -> MasterInfo | None:
        try:
            data = json.loads(kv.value)
            return cls(
                str(data["name"]),
                str(data["listen"]),
                str(data["api"]),
                float(data.get("since", 0.0)),
                kv.create_revision,
            )
        except (ValueError, KeyError, TypeError):
            return None


class Election:
    """This master's lease, its key in the masters' list, and its campaign."""

    def __init__(
        self,
        etcd: Etcd,
        me: MasterInfo,
        ttl: float,
        changed: Callable[[], None],
    ) -> None:
        self.etcd = etcd
        self.me = me
        self.ttl = max(1, math.ceil(ttl))
        self.changed = changed  # called when role, term, leader or reachability move
        self.lease = 0
        self.term = 0
        self.leader: MasterInfo | None = None
        self.reachable = True
        self.error = ""  # why etcd could not be used, while it cannot
        self.renewed_at = -math.inf  # monotonic: when the last successful renewal was sent
        self.others: list[str] = []  # the other masters' names, read at each renewal
        self._task: asyncio.Task[None] | None = None

    # --- what the master asks -----------------------------------------------------
    @property
    def leading(self) -> bool:
        """This master won the current term (it may still have stopped acting)."""
        return self.term > 0 and self.leader is not None and self.leader.name == self.me.name

    @property
    def acting(self) -> bool:
        """Leading, and renewed recently enough that no other master can have won."""
        deadline = self.renewed_at + self.ttl * RENEW_DEADLINE
        return self.leading and time.monotonic() < deadline

    @property
    def expired(self) -> bool:
        """Our lease has surely ended (no renewal for a whole TTL): another master may lead."""
        return time.monotonic() > self.renewed_at + self.ttl

    @property
    def role(self) -> str:
        if self.acting:
            return "leader"
        if not self.reachable:
            return "cut off"
        return "standby"

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Reach etcd, take a lease, announce this master, campaign once; EtcdError if not."""
        await self.etcd.status()
        found = await self.etcd.get(MASTERS_PREFIX + self.me.name)
        if found and found[0].lease:
            raise EtcdError(
                f"a master named {self.me.name!r} is already on this etcd"
                f" (if it died, its lease ends within {self.ttl} s)"
            )
        await self._new_lease()
        await self._campaign()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Give up the lease (and with it the lead) at once, so a standby need not wait."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.lease:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(self.lease)
        await self.etcd.close()

    async def masters(self) -> list[MasterInfo]:
        """Every master on this etcd (EtcdError if unreachable), the leader's term on its row."""
        leader = await self.etcd.get(ELECTION_KEY)
        head = MasterInfo.decode(leader[0]) if leader else None
        out = []
        for kv in await self.etcd.get(MASTERS_PREFIX, prefix=True):
            info = MasterInfo.decode(kv)
            if info is None:
                continue
            if head is not None and info.name == head.name:
                info = head
            else:
                info = MasterInfo(info.name, info.listen, info.api, 0.0, 0)
            out.append(info)
        return out

    # --- the loop ----------------------------------------------------------------------
    async def _new_lease(self) -> None:
        started = MasterInfo(self.me.name, self.me.listen, self.me.api, time.time())
        sent = time.monotonic()
        self.lease = await self.etcd.grant(self.ttl)
        self.renewed_at = sent
        await self.etcd.put(MASTERS_PREFIX + self.me.name, started.encode(), self.lease)

    async def _campaign(self) -> None:
        mine = MasterInfo(self.me.name, self.me.listen, self.me.api, time.time())
        won, holder = await self.etcd.campaign(ELECTION_KEY, mine.encode(), self.lease)
        before = (self.term, self.leader)
        if holder is None:
            self.term, self.leader = 0, None
        else:
            info = MasterInfo.decode(holder)
            held = won or (
                info is not None and info.name == self.me.name and holder.lease == self.lease
            )
            self.leader = info
            self.term = holder.create_revision if held else 0
            if held and not won and info is not None:
                self.leader = info  # still ours
        if (self.term, self.leader) != before:
            self.changed()

    async def _renew(self) -> None:
        sent = time.monotonic()
        left = await self.etcd.keepalive(self.lease)
        if left <= 0:  # expired while we could not reach etcd: start over
            self.term, self.leader = 0, None
            self.changed()
            await self._new_lease()
            return
        self.renewed_at = sent
        self.others = [m.name for m in await self.masters() if m.name != self.me.name]

    async def _run(self) -> None:
        due = time.monotonic()
        acting, expired = self.acting, self.expired
        while True:
            await asyncio.sleep(POLL)
            if (acting, expired) != (self.acting, self.expired):  # a deadline passed meanwhile
                acting, expired = self.acting, self.expired
                self.changed()
            try:
                if time.monotonic() >= due:
                    due = time.monotonic() + self.ttl / 3
                    await self._renew()
                await self._campaign()
                self._reached()
            except EtcdError as e:
                self._lost(str(e))
                due = time.monotonic()  # renew first thing once etcd answers again
            except Exception:  # the campaign must outlive a bad answer
                log.exception("election round failed")
            if (acting, expired) != (self.acting, self.expired):
                acting, expired = self.acting, self.expired
                self.changed()

    def _reached(self) -> None:
        if not self.reachable:
            self.reachable, self.error = True, ""
            self.changed()

    def _lost(self, why: str) -> None:
        if self.reachable:
            self.reachable, self.error = False, why
            self.changed()

    def describe(self) -> dict[str, Any]:
        """What the header and ``corral masters`` show of this master's view."""
        return {
            "name": self.me.name,
            "role": self.role,
            "term": self.term if self.leading else 0,
            "leader": self.leader.name if self.leader else "",
            "error": self.error,
        }
