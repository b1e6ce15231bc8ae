"""The forker: a small process that forks spare shims so the daemon never forks.

This module is the daemon's side; the forker's own program is
`corral.daemon.shim.serve` (``python -m corral.daemon.shim FD ROOT_FD``): it inherits
the daemon's fd of ROOT, from which its shims and seeds walk to every path
they use (see `daemon.beneath`).

A fork shares every page of the parent with the child until one of them
writes it.  CPython writes to every object it touches (reference counts),
so while a forked spare waits, each page the daemon touches costs it a
copy-on-write fault: forking spares from the daemon made the next launch's
own work several times slower.  So the daemon starts this program once, a
fresh interpreter with a few small modules, and asks it for spares; the
spares (see `daemon.shim`) are forked from its small heap, and the daemon's
pages stay its own.

Protocol, over a ``SOCK_SEQPACKET`` socket pair::

    daemon -> forker   b"+"                       fork one more spare
    forker -> daemon   b"s PID START SEED START"  a shim and its seed, with
                         + 4 fds                   cmd and order (write ends),
                                                   report (read end), the
                                                   shim's pidfd
    daemon -> forker   b"u"                       your RUSAGE_CHILDREN, please
    forker -> daemon   b"u UTIME STIME MAXRSS"     seconds, seconds, KiB

The forker reaps its shims as they end, so their usage (and, through their
``wait4``, their programs') adds up in its ``RUSAGE_CHILDREN``: the node's
totals are the daemon's figures plus the forker's.  It exits when the
daemon's end of the socket closes; shims still running then are adopted by
init (or a subreaper), as when the daemon itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from corral.daemon import shim
from corral.daemon.shim import Usage

# Spares kept ready: a job puts several replicas on a node at once (a
# batch), and a launch that finds none waits for a fork (milliseconds).
# One more than a job's usual two a node: after such a batch one is left,
# so none is forked until launches pause (see Supervisor._arm_refill).
SPARES = 3
_MSG = 128  # bytes: "s PID START SEED START" fits with room to spare
_FDS = 4


class ForkerGone(Exception):
    """The forker is not running (it could not start, or it died)."""


class Forker:
    """The daemon's handle on its forker: ask for spares, take them as they come."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Queue[shim.Spare] = asyncio.Queue()
        self._usage: list[asyncio.Future[Usage]] = []  # asked, oldest first
        self._owed = 0  # spares asked for and not yet received
        self._waiting = 0  # launches waiting in take()
        self._closed = False
        self._root = -1  # ROOT's fd, the daemon's: the forker gets a copy

    def start(self, root_fd: int | None = None) -> None:
        """Start the forker and ask for the first spare (call inside the loop).

        ``root_fd`` is ROOT, open (kept for later restarts).
        """
        if root_fd is not None:
            self._root = root_fd
        if self._root < 0:
            raise ForkerGone("the forker needs ROOT's fd")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "corral.daemon.shim", str(theirs.fileno()), str(self._root)],
                pass_fds=[theirs.fileno(), self._root],
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours, self._readable)
        owed, self._owed = self._owed, 0
        for _ in range(max(SPARES, owed)):
            self._ask()

    async def take(self, timeout: float) -> shim.Spare:
        """The next spare, asked for now if none is ready or coming; TimeoutError if none comes.

        Taking does not ask for a replacement: see `refill`.
        """
        if self._sock is None and not self._closed:
            self.log("the forker is gone; starting a new one")
            self.start()
        if self._ready.empty() and self._owed <= self._waiting:
            self._ask()
        self._waiting += 1
        try:
            return await asyncio.wait_for(self._ready.get(), timeout)
        finally:
            self._waiting -= 1

    def give_back(self, spares: Sequence[shim.Spare]) -> None:
        """Spares taken but not handed a spec (a batch refused): ready for the next launch."""
        for spare in spares:
            if self._closed:
                shim.retire(spare)
                os.close(spare.pidfd)
            else:
                self._ready.put_nowait(spare)

    def has_spare(self) -> bool:
        """Whether a spare is ready or coming for the next launch."""
        return self._ready.qsize() + self._owed - self._waiting > 0

    def refill(self, spares: int = SPARES) -> None:
        """Ask for spares until ``spares`` are ready or coming for the next launches.

        Call it once a launch is done with the CPU (the supervisor waits
        ``REFILL_AFTER``, for one; `SPARES` after a pause in launches): a
        fork and the new spare's warm-up running beside a launch slow the
        launch down.
        """
        if self._sock is None:
            return
        for _ in range(spares - (self._ready.qsize() + self._owed - self._waiting)):
            with contextlib.suppress(ForkerGone):
                self._ask()

    async def children_usage(self, timeout: float = 2.0) -> Usage:
        """The totals of every shim (and program) the forker has reaped.

        The forker reaps what has ended before it answers, so a shim this
        daemon has seen end is counted.  Zero if the forker is not running.
        """
        if self._sock is None:
            return Usage(0.0, 0.0, 0)
        fut: asyncio.Future[Usage] = asyncio.get_running_loop().create_future()
        try:
            self._sock.send(b"u")
        except OSError as e:
            self._lost(f"cannot reach the forker: {e.strerror}")
            return Usage(0.0, 0.0, 0)
        self._usage.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except (TimeoutError, ForkerGone):
            return Usage(0.0, 0.0, 0)

    def close(self) -> None:
        """Retire the waiting spares, then let the forker go (it exits at EOF)."""
        self._closed = True
        spares = []
        while not self._ready.empty():
            spares.append(self._ready.get_nowait())
        for spare in spares:
            shim.retire(spare)
        # Wait (briefly) for the spares to leave while their parent can still
        # reap them; orphaned, they would linger as zombies under some inits.
        _wait_exits([s.pidfd for s in spares], 2.0)
        for spare in spares:
            os.close(spare.pidfd)
        self._disconnect()
        if self._proc is not None:
            try:
                self._proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _ask(self) -> None:
        if self._sock is None:
            raise ForkerGone("the forker is not running")
        try:
            self._sock.send(b"+")
        except OSError as e:
            self._lost(f"cannot reach the forker: {e.strerror}")
            raise ForkerGone("the forker is not running") from None
        self._owed += 1

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, _MSG, _FDS)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(f"forker connection failed: {e.strerror}")
            return
        msg = _parse(data, fds)
        if isinstance(msg, shim.Spare):
            self._owed -= 1
            self._ready.put_nowait(msg)
        elif isinstance(msg, Usage) and self._usage:
            fut = self._usage.pop(0)
            if not fut.done():  # it timed out meanwhile
                fut.set_result(msg)
        else:
            for fd in fds:
                os.close(fd)
            self._lost(f"bad message from the forker: {data!r}" if data else "the forker exited")

    def _lost(self, why: str) -> None:
        if not self._closed:
            self.log(why)
        self._disconnect()
        for fut in self._usage:
            if not fut.done():
                fut.set_exception(ForkerGone(why))
        self._usage.clear()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
            self._proc = None

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()
            self._sock = None


def _parse(data: bytes, fds: list[int]) -> shim.Spare | Usage | None:
    """A forker message as a spare or a usage figure; None if it is neither."""
    kind, *fields = data.split() or [b""]
    try:
        if kind == b"s" and len(fields) == 4 and len(fds) == _FDS:
            pid, start, seed, seed_start = (int(f) for f in fields)
            return shim.Spare(pid, start, seed, seed_start, *fds)
        if kind == b"u" and len(fields) == 3 and not fds:
            return Usage(float(fields[0]), float(fields[1]), int(fields[2]))
    except ValueError:
        pass
    return None


def _wait_exits(pidfds: list[int], timeout: float) -> None:
    """Wait until every process behind ``pidfds`` has exited, or ``timeout``."""
    poll = select.poll()
    for fd in pidfds:
        poll.register(fd, select.POLLIN)
    left = len(pidfds)
    deadline = time.monotonic() + timeout
    while left and (wait := deadline - time.monotonic()) > 0:
        for fd, _ in poll.poll(wait * 1000):
            poll.unregister(fd)
            left -= 1
