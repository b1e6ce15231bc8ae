"""The shim: a forked child that starts one program and records its end.

Processes must survive the daemon, yet someone must ``wait4`` them to learn
how they ended.  So the daemon keeps one shim forked ahead of time (by its
forker, see `daemon.forker`; no exec) in its own session, waiting for a
`Spec`.  Given one, the shim ``posix_spawn``s the program in another
session with stdout and stderr on its log, reports the program's pid back
over a pipe, writes the launch record, then waits for the program and
writes the exit record.  Whoever reads ROOT/run later (this daemon or the
next one) can re-adopt the program and learns the real reason it ended.

The forked code touches only ``os``/``signal``/``time`` calls and always
leaves with ``os._exit``.

This module is also the forker's program (``python -m daemon.shim FD``,
see `serve`): it imports nothing heavy, since every page the forker holds
is shared with each spare, and each one a spare writes costs a fault.

Report protocol (one line, then the shim closes the pipe)::

    ok PID START STATE  the program runs; START is its start time in ticks,
                        STATE its /proc state letter right after the exec
    err ERRNO           exec (or the setup before it) failed with ERRNO
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import setproctitle

_SHIM_IGNORES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The app gets default dispositions back: ignored signals survive exec, and
# Python itself ignores SIGPIPE and SIGXFSZ.
_APP_DEFAULTS = (*_SHIM_IGNORES, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT


class Usage(NamedTuple):
    """``getrusage(RUSAGE_CHILDREN)`` figures."""

    utime: float  # seconds
    stime: float  # seconds
    maxrss: int  # KiB, as getrusage gives it

    def __or__(self, other: object) -> Usage:
        """Two processes' children together: times add up, the peak is the higher."""
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.utime + other.utime, self.stime + other.stime, max(self.maxrss, other.maxrss)
        )


def own_children_usage() -> Usage:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(ru.ru_utime, ru.ru_stime, ru.ru_maxrss)


@dataclass(frozen=True)
class Spec:
    """Everything the shim needs, computed by the daemon before the fork."""

    launch: str
    app: str
    exe: str
    argv: list[str]
    env: dict[str, str]  # on top of the shim's own (the daemon's, less its secrets)
    cwd: str
    log_path: str
    started_at: float  # wall clock, as the daemon reports it
    boot_id: str
    record_path: str  # ROOT/run/<launch>.json, a `records.LaunchRecord`
    exit_path: str  # ROOT/run/<launch>.exit, a `records.ExitRecord`


@dataclass(frozen=True)
class Spare:
    """A shim forked ahead of time, waiting on ``cmd`` for the `Spec` to run.

    Forking costs a millisecond or more; doing it before the launch request
    arrives keeps it off the launch's critical path.
    """

    pid: int
    start: int  # its start time in clock ticks
    cmd: int  # write end: the daemon sends one spec, then closes it
    report: int  # read end: the shim's one-line report
    pidfd: int  # opened by the parent at the fork: surely this process


def fork_spare() -> Spare:
    """Fork a shim that waits for its spec (or exits at EOF on ``cmd``)."""
    cmd_r, cmd_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _spare_main(cmd_r, rep_w)
    os.close(cmd_r)
    os.close(rep_w)
    return Spare(pid, _start_ticks(pid), cmd_w, rep_r, os.pidfd_open(pid))


def hand(spare: Spare, spec: Spec) -> None:
    """Give ``spec`` to ``spare``; its report then arrives on ``spare.report``."""
    try:
        # vars(), not dataclasses.asdict: no deep copy of the environment.
        _write_all(spare.cmd, json.dumps(vars(spec)).encode())
    finally:
        os.close(spare.cmd)


def retire(spare: Spare) -> None:
    """Let an unused spare go: EOF on its command pipe makes it exit."""
    os.close(spare.cmd)
    os.close(spare.report)


def parse_report(data: bytes) -> tuple[int, int, str] | int:
    """(pid, start ticks, state letter) on success, else the errno that stopped the exec."""
    parts = data.split()
    if len(parts) == 4 and parts[0] == b"ok":
        return int(parts[1]), int(parts[2]), parts[3].decode("ascii", "replace")
    if len(parts) == 2 and parts[0] == b"err":
        return int(parts[1])
    raise ValueError(f"bad report from shim: {data[:80]!r}")


# ---------------------------------------------------------------- child side


def _spare_main(cmd: int, report: int) -> NoReturn:
    try:
        _detach(cmd, report)
        _warm()
        base_env = dict(os.environ)  # decoded now, not while the launch waits
        data = _read_all(cmd)
        if data:
            _run(Spec(**json.loads(data)), base_env, report)
    except BaseException:
        os._exit(1)
    os._exit(0)


def _run(spec: Spec, base_env: dict[str, str], report: int) -> None:
    """Start the program, report it, wait for it, record how it ended."""
    try:
        os.chdir(spec.cwd)
        setproctitle.setproctitle(f"corral-shim {spec.launch} {spec.exe}")
        setproctitle.setthreadtitle("corral-shim")  # the title call rewrote comm too
        pid = os.posix_spawn(
            spec.exe,
            spec.argv,
            {**base_env, **spec.env},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, spec.log_path, _LOG_FLAGS, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
            setsigdef=_APP_DEFAULTS,
            setsigmask=(),
        )
    except OSError as e:
        _write_all(report, f"err {e.errno or 0}\n".encode())
        return
    start, state = _stat_of(pid)
    _write_all(report, f"ok {pid} {start} {state}\n".encode())
    os.close(report)
    # After the report, off the launch's critical path; before the wait, so
    # the launch record is always on disk ahead of the exit record.
    _write_launch(spec, pid, start)
    # posix_spawn returns after the exec, and a peak only rises: this bounds
    # what the program inherited from the shim's address space.
    base = _own_hwm()
    _, status, ru = os.wait4(pid, 0)
    _write_exit(spec.exit_path, status, ru, base)


def _warm() -> None:
    """Walk the launch path once while idle.

    A forked copy of the daemon pays a copy-on-write fault for every page it
    first writes, and CPython writes to every object it touches (reference
    counts).  Paying those here, before any spec arrives, keeps them off
    the launch's critical path.
    """
    Spec(
        **json.loads(
            json.dumps({f: "" for f in Spec.__dataclass_fields__} | {"argv": [], "env": {}})
        )
    )
    _own_hwm()
    _stat_of(os.getpid())
    f"ok {os.getpid()} {0} R\n".encode()


def _detach(*keep: int) -> None:
    """Own session, deaf to the daemon's signals, no inherited fds but ``keep``."""
    gc.disable()  # no finalizers of the daemon's objects may run here
    os.setsid()
    for sig in _SHIM_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    # The forker ignores SIGCHLD to have its shims reaped for it; a shim must
    # not inherit that, or wait4 would never see its program's status.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    # A fork keeps the daemon's command line: without a title of its own a
    # shim reads as a second worker in `ps`.
    setproctitle.setproctitle("corral-shim (spare)")
    setproctitle.setthreadtitle("corral-shim")
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    # Holding the daemon's sockets would keep the master's connection open
    # after the daemon dies.
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _own_hwm() -> int:
    """This process's peak RSS in bytes (VmHWM).

    At exec the kernel folds the old address space's peak into the new
    program's ``ru_maxrss``; posix_spawn execs from the shim's address
    space, so a program's wait4 peak at or below this figure is the shim's,
    not the program's.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _start_ticks(pid: int) -> int:
    return _stat_of(pid)[0]


def _stat_of(pid: int) -> tuple[int, str]:
    """``pid``'s start time in clock ticks and its state letter, from /proc/PID/stat."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    data = os.read(fd, 4096)
    os.close(fd)
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19]), fields[0].decode("ascii", "replace")


def _write_launch(spec: Spec, pid: int, start: int) -> None:
    """The launch record, as `records.LaunchRecord` reads it; best effort."""
    rec = {
        "launch": spec.launch,
        "pid": pid,
        "shim": os.getpid(),
        "shim_start": _start_ticks(os.getpid()),
        "app": spec.app,
        "argv": spec.argv,
        "started_at": spec.started_at,
        "start": start,
        "boot_id": spec.boot_id,
    }
    with contextlib.suppress(OSError):  # it runs all the same, just not adoptable
        _write_atomic(spec.record_path, json.dumps(rec).encode())


def _write_exit(path: str, status: int, ru: resource.struct_rusage, base: int) -> None:
    utime, stime, maxrss = float(ru.ru_utime), float(ru.ru_stime), int(ru.ru_maxrss) * 1024
    rec = (
        f'{{"status":{status},"utime":{utime!r},"stime":{stime!r},'
        f'"maxrss":{maxrss},"base":{base},"ended_at":{time.time()!r}}}'
    )
    _write_atomic(path, rec.encode())


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


# ---------------------------------------------------------------- the forker


def serve(fd: int) -> None:
    """Be the forker (see `daemon.forker`): answer requests on socket ``fd`` until EOF."""
    setproctitle.setproctitle("corral-forker")
    # A shim resets this at once (see _detach): it must wait4 its own.
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    for sig in _SHIM_IGNORES:
        signal.signal(sig, signal.SIG_IGN)  # the daemon decides when we go: EOF
    sock = socket.socket(fileno=fd)
    while req := sock.recv(16):
        if req == b"u":
            _reap()  # count every shim that has ended by now
            u = own_children_usage()
            sock.send(f"u {u.utime!r} {u.stime!r} {u.maxrss}".encode())
        elif req == b"+":
            spare = fork_spare()
            fds = [spare.cmd, spare.report, spare.pidfd]
            try:
                socket.send_fds(sock, [f"s {spare.pid} {spare.start}".encode()], fds)
            finally:
                retire(spare)  # the daemon holds the copies now
                os.close(spare.pidfd)


def _reap() -> None:
    """Collect every child that has ended (their usage joins RUSAGE_CHILDREN)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(int(sys.argv[1]))
