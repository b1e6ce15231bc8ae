"""Reading processes from /proc: state, CPU times, memory, start time.

Every reader returns None when the process is gone, so callers never have
to tell a race (the process ended between two reads) from an absent pid.

The forker imports this module (see `daemon.shim`), and every shim and
seed shares its pages: nothing heavier than `os` here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from corral.transport.messages import ProcState

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Bounds on one `tree_cpu` walk, so a beat costs a bounded number of reads
# whatever a program spawns: processes of one tree, threads read per process.
MAX_TREE = 256
MAX_THREADS = 64

# /proc/PID/stat state letters -> our alive states (DESIGN.md).
_STATES: dict[str, ProcState] = {
    "R": "running",
    "S": "sleeping",
    "D": "sleeping",
    "I": "sleeping",
    "W": "sleeping",
    "P": "sleeping",
    "T": "stopped",
    "t": "stopped",
    "Z": "zombie",
    "X": "zombie",
}


def state_of(letter: str) -> ProcState:
    """A /proc state letter as one of our alive states."""
    return _STATES.get(letter, "sleeping")


class Stat(NamedTuple):
    """The few fields of /proc/PID/stat we use."""

    state: ProcState
    utime: float  # seconds
    stime: float  # seconds
    start: int  # clock ticks since boot: with the pid, a process's identity
    cutime: float = 0.0  # seconds: of the children it has waited for (and theirs)
    cstime: float = 0.0  # seconds
    threads: int = 1


class Cpu(NamedTuple):
    """CPU seconds of a process and its descendants (see `tree_cpu`)."""

    user: float
    sys: float


class Mem(NamedTuple):
    rss: int  # bytes
    max_rss: int  # bytes


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_stat(data: bytes) -> Stat:
    """Parse /proc/PID/stat; comm may hold spaces and parens, so split after the last ')'."""
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields
    # 14-17, num_threads 20, starttime 22.
    state = state_of(fields[0].decode())
    return Stat(
        state,
        int(fields[11]) / CLK_TCK,
        int(fields[12]) / CLK_TCK,
        int(fields[19]),
        int(fields[13]) / CLK_TCK,
        int(fields[14]) / CLK_TCK,
        int(fields[17]),
    )


def stat(pid: int) -> Stat | None:
    """The process's /proc stat fields, or None if it does not exist."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    try:
        return parse_stat(data)
    except (ValueError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22), or None."""
    st = stat(pid)
    return st.start if st else None


def is_same(pid: int, start: int) -> bool:
    """True when ``pid`` exists and is the process that started at ``start``."""
    return start_ticks(pid) == start


def children(pid: int, threads: int = 1) -> list[int]:
    """The pids of ``pid``'s children (``threads``: its thread count, from its stat).

    A child belongs to the thread that forked it, so a process of several
    threads is read thread by thread (at most `MAX_THREADS` of them).  Needs
    /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN, on in every common
    kernel); without it a process has no children here.
    """
    if threads <= 1:
        tids = [pid]
    else:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")[:MAX_THREADS]]
        except (OSError, ValueError):
            return []
    out: list[int] = []
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            out.extend(int(c) for c in data.split())
    return out


def tree_cpu(pid: int, top: Stat, limit: int = MAX_TREE) -> Cpu:
    """CPU seconds of ``pid`` (whose stat is ``top``) and of its descendants, live and reaped.

    For each live process of the tree (up to ``limit`` of them): its own
    time plus its reaped children's (cutime, cstime: each waited-for child
    with all it had reaped in turn).  A child's time so moves from its own
    figure to its parent's children figure when it is reaped: the total
    grows steadily while a shell runs short commands, and ends where
    ``wait4``'s rusage of the program (its own and its reaped children's)
    starts.  Zombies count until reaped; orphans that left the tree (their
    parent died first) no longer count.
    """
    user, system = top.utime + top.cutime, top.stime + top.cstime
    todo = children(pid, top.threads)
    seen = 1
    while todo and seen < limit:
        child = todo.pop()
        data = _read(f"/proc/{child}/stat")
        if not data:
            continue  # gone, and so counted in its parent's cutime (or lost to init)
        try:
            st = parse_stat(data)
        except (ValueError, IndexError):
            continue
        seen += 1
        user += st.utime + st.cutime
        system += st.stime + st.cstime
        todo.extend(children(child, st.threads))
    return Cpu(user, system)


def mem(pid: int) -> Mem:
    """VmRSS and VmHWM in bytes (0 when absent, e.g. for a zombie).

    A seed reads its own just before its exec (see `daemon.shim`): at exec
    the kernel folds the old address space's peak into the program's
    ``ru_maxrss``, so a wait4 peak at or below the seed's is the seed's.
    """
    data = _read(f"/proc/{pid}/status") or b""
    return Mem(_kib(data, b"\nVmRSS:"), _kib(data, b"\nVmHWM:"))


def _kib(data: bytes, key: bytes) -> int:
    """The figure on the line starting ``key`` ("\\nVmRSS:": kB) in bytes; 0 if there is none."""
    at = data.find(key)
    if at < 0:
        return 0
    end = data.find(b"\n", at + 1)
    return int(data[at + len(key) : end if end >= 0 else len(data)].split()[0]) * 1024


def mem_total() -> int:
    """MemTotal from /proc/meminfo in bytes (0 if it cannot be read)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            data = b"\n" + f.read()
    except OSError:
        return 0
    try:
        return _kib(data, b"\nMemTotal:")
    except (ValueError, IndexError):
        return 0


def boot_id() -> str:
    """This boot's id: a pid and start time only identify a process within one boot."""
    data = _read("/proc/sys/kernel/random/boot_id")
    return data.decode().strip() if data else ""
