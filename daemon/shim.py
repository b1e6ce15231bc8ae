"""The shim and its seed: the two processes behind every program.

Processes must survive the daemon, yet someone must ``wait4`` them to learn
how they ended.  So every program gets a shim, its parent, in a session of
its own.  Forking is slow, so both are made ahead of time (by the forker,
see `daemon.forker`; no exec): the shim forks the *seed*, a process that
waits for its `Spec` and then becomes the program.

Given a spec, the seed moves to the app's directory (or the working
directory inside it that the spec names), puts stdout and
stderr on the launch's log and execs the program.  Every one of those
paths is under ROOT, where a program may have put a symlink since the
daemon looked: the seed walks to each from ROOT's fd (inherited from the
forker) without following any (see `daemon.beneath`), creates the log
0600, and execs a program inside ROOT by ``execveat`` from the fd of its
directory, never through a symlink.  The pid the daemon
reports is the seed's, known before the spec is even sent, so the launch
reply does not wait for the exec: programs the exec would refuse
(missing, not executable, not a program for this machine) are refused by
the daemon first (see `daemon.exe`).  Should the exec still fail, the
seed says so in the log and on its report pipe and exits 127 (not found)
or 126, like a shell.

The shim gets the same spec: it writes the launch record once the seed
has execed, then waits for the program and writes the exit record (both
made and written by `daemon.records`: 0600, in ROOT/run reached the same
way).
Whoever reads ROOT/run later (this daemon or the next one) can re-adopt
the program and learns the real reason it ended.

The forked code always leaves with ``os._exit``.

This module is also the forker's program (``python -m corral.daemon.shim FD ROOT_FD``,
see `serve`): it imports nothing heavy, since every page the forker holds
is shared with each shim and seed, and each one they write costs a fault.

Pipes, per spare::

    cmd     daemon -> seed   the spec (JSON), then EOF; EOF alone: exit
    order   daemon -> shim   the same spec, then EOF (read once the seed
                             has execed or died: the shim records a launch
                             even when its seed is killed before the exec);
                             EOF alone: exit once the seed has
    report  seed -> daemon   EOF at the exec, or "err ERRNO" if it failed
    info    seed -> shim     the seed's peak RSS just before the exec (see
                             _peak_rss), then EOF
    ack     shim -> forker   "SEED_PID SEED_START" once the seed is forked
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

import setproctitle

from corral.daemon import beneath, procfs, records
from corral.daemon.beneath import APPS, LOGS

_SHIM_IGNORES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The app gets default dispositions back: ignored signals survive exec, and
# Python itself ignores SIGPIPE and SIGXFSZ.
_APP_DEFAULTS = (*_SHIM_IGNORES, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)
LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
PRIVATE = 0o600  # logs: other users read no output (records are 0600 too: daemon.records)
_AT_SYMLINK_NOFOLLOW = 0x100
# The shim's pipe is made this large (the system's pipe-max-size permitting),
# so that a spec up to this size never blocks the daemon; the kernel itself
# takes at most a quarter of the stack limit (2 MiB by default) of
# arguments and environment.
ORDER_ROOM = 1 << 20  # bytes
WORKDIR_MODE = 0o700  # a job's working directory, made by its seed (as daemon.jobs says)
SHIM_NICE = 19  # added to a shim's nice value once its seed is forked (see _shim_main)


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
    """Everything the shim needs, computed by the daemon before the fork.

    Paths under ROOT are not in it as paths: the seed and the shim walk to
    ``apps/APP`` (the working directory, or ``apps/APP/WORKDIR`` when
    ``workdir`` names one), ``apps/APP/logs/LAUNCH.log`` and
    ``run/LAUNCH.{json,exit}`` (`records.LaunchRecord`, `records.ExitRecord`)
    from ROOT's fd.
    """

    launch: str
    app: str
    exe: str  # the program's path: exec'd by it when ``beneath`` is empty
    beneath: list[str]  # inside ROOT: its place (directories, then its name)
    script: bool  # exec'd from beneath ROOT, a script needs its directory's fd open
    argv: list[str]
    env: dict[str, str]  # on top of the shim's own (the daemon's, less its secrets)
    started_at: float  # wall clock, as the daemon reports it
    boot_id: str
    key: str = ""  # the launch's request key, kept in its record (`records.LaunchRecord`)
    # The working directory inside ``apps/APP`` (``jobs/ID/INDEX``), as names
    # checked by the daemon; empty: the app dir itself.
    workdir: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Spare:
    """A shim and its seed, forked ahead of time: the seed waits on ``cmd`` for a `Spec`.

    Forking costs a millisecond or more; doing it before the launch request
    arrives keeps it off the launch's critical path.
    """

    pid: int  # the shim
    start: int  # its start time in clock ticks
    seed: int  # the program-to-be: the pid the launch reports
    seed_start: int  # its start time in clock ticks (an exec keeps it)
    cmd: int  # write end: the daemon sends one spec, then closes it
    order: int  # write end: the same spec, for the shim
    report: int  # read end: EOF once the seed has execed, or "err ERRNO"
    pidfd: int  # the shim's, opened by its parent at the fork: surely this process


def fork_spare() -> Spare:
    """Fork a shim and its seed; the seed waits for its spec (or exits at EOF on ``cmd``)."""
    cmd_r, cmd_w = os.pipe()
    order_r, order_w = os.pipe()
    with contextlib.suppress(OSError):  # the most a spec may weigh: see hand()
        fcntl.fcntl(order_w, fcntl.F_SETPIPE_SZ, ORDER_ROOM)
    rep_r, rep_w = os.pipe()
    ack_r, ack_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (cmd_w, order_w, rep_r, ack_r):
            os.close(fd)
        _shim_main(cmd_r, order_r, rep_w, ack_w)
    for fd in (cmd_r, order_r, rep_w, ack_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    try:
        seed, seed_start = (int(f) for f in _read_all(ack_r).split())
    except ValueError:
        for fd in (cmd_w, order_w, rep_r, pidfd):
            os.close(fd)
        raise OSError(errno.ECHILD, "the shim could not fork its seed") from None
    return Spare(pid, _start_of(pid), seed, seed_start, cmd_w, order_w, rep_r, pidfd)


def encode_spec(spec: Spec) -> bytes:
    """``spec`` as the seed and the shim read it (JSON)."""
    # vars(), not dataclasses.asdict: no deep copy of the environment.
    return json.dumps(vars(spec)).encode()


def check_room(spare: Spare, data: bytes) -> None:
    """`SpecTooLarge` if ``data`` (an encoded spec) would not fit in ``spare``'s shim pipe.

    The shim reads its spec only after the exec, so a write that blocked
    would block the daemon until then.
    """
    room = fcntl.fcntl(spare.order, fcntl.F_GETPIPE_SZ)
    if len(data) > room:
        raise SpecTooLarge(
            f"command line and environment too large: {len(data)} bytes, at most {room}"
        )


def hand(spare: Spare, data: bytes) -> bool:
    """`give` ``data`` to ``spare`` and let its seed `go`; what `give` returned."""
    taken = give(spare, data)
    go(spare)
    return taken


def give(spare: Spare, data: bytes) -> bool:
    """Give a spec (``data``, see `encode_spec`) to ``spare``'s seed and to its shim.

    Check the room first (`check_room`).  The seed reads it, then waits
    for `go` (the end of its pipe), which it also gets if this process
    dies first: once given, a spec runs.  False if the seed was gone (a
    signal killed it): its shim, if alive, still gets the spec, and
    records the launch and how the seed ended.
    """
    try:
        _write_all(spare.cmd, data)
        taken = True
    except OSError:
        taken = False
    # The seed has its orders: the program runs even if the shim is gone
    # (the daemon then watches it alone).
    with contextlib.suppress(OSError):
        _write_all(spare.order, data)
    os.close(spare.order)
    return taken


def go(spare: Spare) -> None:
    """Let ``spare``'s seed, given its spec, start on it (it execs the program)."""
    os.close(spare.cmd)


class SpecTooLarge(ValueError):
    """The spec outweighs the pipe to the shim (see `hand`)."""


def retire(spare: Spare) -> None:
    """Let an unused spare go: EOF on its pipes makes the seed exit, then the shim."""
    os.close(spare.cmd)
    os.close(spare.order)
    os.close(spare.report)


def parse_report(data: bytes) -> int:
    """The errno in a seed's report (``err ERRNO``); an exec that went through sends none."""
    parts = data.split()
    if len(parts) == 2 and parts[0] == b"err" and parts[1].isdigit():
        return int(parts[1])
    raise ValueError(f"bad report from a seed: {data[:80]!r}")


# ---------------------------------------------------------------- the shim


def _shim_main(cmd: int, order: int, report: int, ack: int) -> NoReturn:
    try:
        _detach(cmd, order, report, ack, _ROOT)
        info_r, info_w = os.pipe()
        # Blocked across the fork: ignored, a signal would be lost, and the
        # daemon may signal the seed (its pid is the launch's) before it has
        # run a line.  Blocked, it waits until the seed unblocks it.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SHIM_IGNORES)
        seed = os.fork()
        if seed == 0:
            for fd in (info_r, ack, order):
                os.close(fd)
            _seed_main(cmd, report, info_w)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHIM_IGNORES)
        for fd in (cmd, report, info_w):
            os.close(fd)
        seed_start = _start_of(seed)
        _write_all(ack, f"{seed} {seed_start}".encode())
        os.close(ack)
        _shim_run(seed, seed_start, order, info_r)
    except BaseException:
        os._exit(1)
    os._exit(0)


def _step_back() -> None:
    """Lower the shim's CPU priority, its launch recorded: what is left is the exit record.

    The launch record is written first, at the daemon's priority: a daemon
    restarted before it exists would not adopt the program, and on a busy
    box a shim at nice 19 may wait seconds for a CPU.  What follows (the
    wait, the exit record) yields the CPU to launches.  Under the kernel's
    autogroups (``/proc/sys/kernel/sched_autogroup_enabled``), a session is
    a scheduling group and a nice value ranks processes only within theirs:
    the shim, alone in its session, lowers its group's too (best effort:
    for other users than root, at most one change in 100 ms is let through).
    """
    with contextlib.suppress(OSError):
        os.nice(SHIM_NICE)
    with contextlib.suppress(OSError):
        fd = os.open("/proc/self/autogroup", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"%d" % SHIM_NICE)
        finally:
            os.close(fd)


def _shim_run(seed: int, seed_start: int, order: int, info: int) -> None:
    """Record the launch ordered (if any), wait for the seed, record its end."""
    # The seed first: EOF once it has execed (or died).  Writing the record
    # meanwhile would take a CPU from the launch's reply and exec, on their
    # way at that moment; the spec waits in the pipe.
    _warm_shim(seed, seed_start)
    base = _read_all(info)
    data = _read_all(order)
    spec = Spec(**json.loads(data)) if data else None
    if spec is not None:
        _write_launch(spec, seed, seed_start)
        setproctitle.setproctitle(f"corral-shim {spec.launch} {spec.exe}")
        setproctitle.setthreadtitle("corral-shim")  # the title call rewrote comm too
    _step_back()
    _, status, ru = os.wait4(seed, 0)
    if spec is not None:
        # No peak from the seed: it failed before the exec, so all of it is the seed's.
        _write_exit(spec.launch, status, ru, int(base) if base else ru.ru_maxrss * 1024)


# ---------------------------------------------------------------- the seed


def _seed_main(cmd: int, report: int, info: int) -> NoReturn:
    try:
        os.setsid()  # the program's own session and group: pgid == pid
        # A stop sent before the exec must still stop it, and one sent
        # before this line (pending: see _shim_main) stops it here.
        for sig in _SHIM_IGNORES:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHIM_IGNORES)
        setproctitle.setproctitle("corral-seed")
        setproctitle.setthreadtitle("corral-seed")
        base_env = dict(os.environ)  # decoded now, not while the launch waits
        _warm(base_env)
        data = _read_all(cmd)
        if data:
            _become(Spec(**json.loads(data)), base_env, report, info)
    except BaseException:
        os._exit(1)
    os._exit(0)


def _become(spec: Spec, base_env: dict[str, str], report: int, info: int) -> NoReturn:
    """Exec ``spec``'s program in this process; on failure say why and exit 127 or 126."""
    what = f"execute {spec.argv[0]!r}"
    try:
        env = {**base_env, **spec.env}
        app = beneath.walk(_ROOT, (APPS, spec.app))
        logs = beneath.walk(app, (LOGS,))
        try:
            log = os.open(f"{spec.launch}.log", LOG_FLAGS, PRIVATE, dir_fd=logs)
        finally:
            os.close(logs)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        if spec.workdir:  # walked again from the app's fd: no symlink followed
            what = f"enter {'/'.join(spec.workdir)}"
            # The daemon refused a symlink it found there; what is missing
            # is made here, off the launch reply's way (see AppStore.programs).
            work = beneath.walk_making(app, spec.workdir, WORKDIR_MODE)
            try:
                os.fchdir(work)
            finally:
                os.close(work)
            what = f"execute {spec.argv[0]!r}"
        else:
            os.fchdir(app)
        at = _program_dir(spec, app) if spec.beneath else None
        os.close(app)
        if at is not None:
            argv, envp = _c_vector(spec.argv), _c_vector(f"{k}={v}" for k, v in env.items())
        # Last, after every allocation: the peak the exec hands on.
        _tell(info, b"%d" % _peak_rss())
        # After the last write to the shim: with SIGPIPE back to its default,
        # a shim killed meanwhile would take the program down with it.
        for sig in _APP_DEFAULTS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if at is None:
            os.execve(spec.exe, spec.argv, env)
        else:
            _execveat(at, spec.beneath[-1], argv, envp, spec, env)
    except OSError as e:
        code = e.errno or errno.ENOEXEC
        why = f"corral: cannot {what}: {os.strerror(code)}\n"
        with contextlib.suppress(OSError):
            _write_all(2, why.encode())
        with contextlib.suppress(OSError):
            _write_all(report, f"err {code}\n".encode())
        os._exit(127 if code == errno.ENOENT else 126)
    raise AssertionError("unreachable")  # execve returns only by raising


def _program_dir(spec: Spec, app: int) -> int:
    """A new fd for the directory of ``spec``'s program inside ROOT, walked to without symlinks.

    The app's own bin/ (the usual place) is one step from the app's fd.
    """
    dirs = spec.beneath[:-1]
    mine = dirs[:2] == [APPS, spec.app]
    fd = beneath.walk(app, dirs[2:]) if mine else beneath.walk(_ROOT, dirs)
    if spec.script:  # its interpreter opens /dev/fd/N/NAME after the exec
        os.set_inheritable(fd, True)
    return fd


def _c_vector(items: Iterable[str]) -> tuple[bytes, bytes]:
    """A NULL-terminated ``char *[]`` of ``items``, encoded as `os.execve` would.

    As (the strings, NUL-separated; the pointers into them): both must be
    kept alive until the exec.  No ctypes array type is made (making one
    costs a fresh seed some hundred microseconds).
    """
    encoded = [os.fsencode(s) for s in items]
    blob = b"\0".join(encoded) + b"\0"
    at = id(blob) + _BYTES_DATA
    pointers = []
    for item in encoded:
        pointers.append(at)
        at += len(item) + 1
    return blob, struct.pack(f"{len(pointers) + 1}P", *pointers, 0)


def _execveat(
    dir_fd: int,
    name: str,
    argv: tuple[bytes, bytes],
    envp: tuple[bytes, bytes],
    spec: Spec,
    env: dict[str, str],
) -> None:
    """Exec ``name`` in the directory ``dir_fd``, refusing a symlink; returns only by raising.

    ``execveat`` names the program by its own name (as ``ps`` shows it),
    and its directory as ``/dev/fd/N``, which a script's interpreter opens.
    Without it (an old libc), the program is opened with ``O_NOFOLLOW`` and
    execed through that fd (``fexecve``).
    """
    if _EXECVEAT is not None:
        _EXECVEAT(dir_fd, os.fsencode(name), argv[1], envp[1], _AT_SYMLINK_NOFOLLOW)
        code = ctypes.get_errno()
        if code != errno.ENOSYS:
            raise OSError(code, os.strerror(code))
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
    os.set_inheritable(fd, spec.script)  # a script's interpreter opens /dev/fd/N
    os.execve(fd, spec.argv, env)


def _load_execveat() -> Any:
    try:
        func = ctypes.CDLL(None, use_errno=True).execveat
    except (OSError, AttributeError):
        return None
    # argv and envp: packed pointers (see _c_vector), passed as the bytes' buffers.
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def _bytes_data() -> int:
    """Where a bytes object's data starts, from its address (``id``), as measured here."""
    probe = b"corral"
    return (ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value or 0) - id(probe)


_EXECVEAT = _load_execveat()
_BYTES_DATA = _bytes_data()
# ROOT, opened by the daemon and passed down to the forker (see `serve`):
# every path under it is walked from this fd.
_ROOT = -1


def _tell(info: int, data: bytes) -> None:
    """Pass ``data`` on to the shim; a shim gone (killed?) must not stop the program."""
    with contextlib.suppress(OSError):
        _write_all(info, data)


def _peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM, without reading /proc).

    At exec the kernel folds the old address space's peak into the
    program's ``ru_maxrss``, so a wait4 peak at or below the seed's is the
    seed's (see `_write_exit`).
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sample_spec() -> Spec:
    """A spec shaped like a job replica's, decoded as a real one is (see `_warm`)."""
    sample = {
        "launch": "20261203-081439.647-1f2b",
        "app": "sample",
        "exe": "/usr/bin/sample",
        "beneath": [],
        "script": False,
        "argv": ["sample", "--option", "a value of some length"],
        "env": {"CORRAL_APP": "sample", "CORRAL_JOB": "1", "CORRAL_REPLICA": "0"},
        "started_at": time.time(),
        "boot_id": "0f5b7c3e-8a51-4d4c-9a6e-2b0c1d7e9f10",
        "key": "job1.0.1f2b3c4d",
        "workdir": ["jobs", "1", "0"],
    }
    return Spec(**json.loads(json.dumps(sample).encode()))


def _warm(base_env: dict[str, str]) -> None:
    """Walk the seed's launch path once while idle.

    A forked process pays a fault for every page it first writes, and for
    every page of code it first runs; CPython writes to every object it
    touches (reference counts).  On a VM such a fault costs microseconds:
    paying them here, before any spec arrives, keeps them off the way to
    the exec (launches on a busy node run side by side with these seeds).
    """
    spec = _sample_spec()
    env = {**base_env, **spec.env}
    if _ROOT >= 0:
        os.close(beneath.walk(_ROOT, ()))
        os.close(beneath.walk_making(_ROOT, (), WORKDIR_MODE))
    _c_vector(spec.argv)
    _c_vector(f"{k}={v}" for k, v in env.items())
    _peak_rss()


def _warm_shim(seed: int, seed_start: int) -> None:
    """Walk the shim's part of a launch once while idle: what `_warm` is to the seed.

    Everything but the writes: the spec read, the launch record made and
    encoded, the run directory walked to (not made).
    """
    spec = _sample_spec()
    me = os.getpid()
    records.encode(records.launch_record(spec, (me, _start_of(me)), (seed, seed_start)))
    with contextlib.suppress(OSError, beneath.StoreError):
        os.close(records.RunDir(_ROOT).open())


def _detach(*keep: int) -> None:
    """Own session, deaf to the daemon's signals, no inherited fds but ``keep``."""
    gc.disable()  # no finalizers of the forker's objects may run here
    os.setsid()
    for sig in _SHIM_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    # The forker has a SIGCHLD handler to reap its shims; a shim must not
    # run it, or wait4 would never see its seed's status.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    # A fork keeps the forker's command line: without a title of its own a
    # shim reads as a second forker in `ps`.
    setproctitle.setproctitle("corral-shim (spare)")
    setproctitle.setthreadtitle("corral-shim")
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    low = 3
    for fd in sorted(k for k in keep if k >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _start_of(pid: int) -> int:
    """The start time of ``pid``, this process or a child not yet reaped: always there."""
    start = procfs.start_ticks(pid)
    if start is None:
        raise OSError(errno.ESRCH, f"cannot read /proc/{pid}/stat")
    return start


def _write_launch(spec: Spec, seed: int, seed_start: int) -> None:
    """The launch record (see `records.launch_record`); best effort."""
    me = os.getpid()
    # It runs all the same, just not adoptable; a ``run`` that is a symlink is refused.
    with contextlib.suppress(OSError, beneath.StoreError):
        rec = records.launch_record(spec, (me, _start_of(me)), (seed, seed_start))
        records.save_launch(records.RunDir(_ROOT), rec)


def _write_exit(launch: str, status: int, ru: resource.struct_rusage, base: int) -> None:
    ex = records.ExitRecord(
        status=status,
        utime=float(ru.ru_utime),
        stime=float(ru.ru_stime),
        maxrss=int(ru.ru_maxrss) * 1024,
        ended_at=time.time(),
        base=base,
    )
    records.save_exit(records.RunDir(_ROOT), launch, ex)


# ---------------------------------------------------------------- the forker


def serve(fd: int, root_fd: int) -> None:
    """Be the forker (see `daemon.forker`): answer requests on socket ``fd`` until EOF.

    ``root_fd`` is ROOT, open: every shim and seed walks from it.
    """
    global _ROOT
    _ROOT = root_fd
    os.set_inheritable(root_fd, False)  # seeds keep it until their exec, programs never
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
            fds = [spare.cmd, spare.order, spare.report, spare.pidfd]
            try:
                msg = f"s {spare.pid} {spare.start} {spare.seed} {spare.seed_start}"
                socket.send_fds(sock, [msg.encode()], fds)
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
        serve(int(sys.argv[1]), int(sys.argv[2]))
