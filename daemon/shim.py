"""The shim: a forked child that starts one program and records its end.

Processes must survive the daemon, yet someone must ``wait4`` them to learn
how they ended.  So the daemon forks a shim (no exec) in its own session,
the shim forks and execs the program in another session, reports the
program's pid back over a pipe, then waits for it and writes the exit record
atomically.  Whoever reads ROOT/run later (this daemon or the next one)
learns the real reason.

The forked code runs in a copy of an asyncio process: it touches only
``os``/``signal``/``time`` calls, never the event loop or logging, and
always leaves with ``os._exit``.

Report protocol (one line, then the shim closes the pipe)::

    ok PID START      the program runs; START is its start time in ticks
    err ERRNO         exec (or the setup before it) failed with ERRNO
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import time
from dataclasses import dataclass
from typing import NoReturn

_SHIM_IGNORES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The app gets default dispositions back: ignored signals survive exec, and
# Python itself ignores SIGPIPE and SIGXFSZ.
_APP_DEFAULTS = (*_SHIM_IGNORES, signal.SIGPIPE, signal.SIGXFSZ)


@dataclass(frozen=True)
class Spec:
    """Everything the shim needs, computed by the daemon before the fork."""

    launch: str
    exe: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: str
    exit_path: str


def spawn(spec: Spec) -> tuple[int, int]:
    """Fork a shim for ``spec``; return (shim pid, read end of its report pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _shim(spec, w)
    os.close(w)
    return pid, r


def parse_report(data: bytes) -> tuple[int, int] | int:
    """(pid, start ticks) on success, else the errno that stopped the exec."""
    parts = data.split()
    if len(parts) == 3 and parts[0] == b"ok":
        return int(parts[1]), int(parts[2])
    if len(parts) == 2 and parts[0] == b"err":
        return int(parts[1])
    raise ValueError(f"bad report from shim: {data[:80]!r}")


# ---------------------------------------------------------------- child side


def _shim(spec: Spec, report: int) -> NoReturn:
    try:
        _detach(report)
        err_r, err_w = os.pipe()  # close-on-exec: EOF means the exec worked
        pid = os.fork()
        if pid == 0:
            _exec_app(spec, err_w)
        os.close(err_w)
        failed = _read_all(err_r)
        if failed:
            os.waitpid(pid, 0)
            _write_all(report, b"err " + failed.strip() + b"\n")
            os._exit(0)
        _write_all(report, f"ok {pid} {_start_ticks(pid)}\n".encode())
        os.close(report)
        _, status, ru = os.wait4(pid, 0)
        _write_exit(spec.exit_path, status, ru)
    except BaseException:
        os._exit(1)
    os._exit(0)


def _detach(report: int) -> None:
    """Own session, deaf to the daemon's signals, no inherited fds but ``report``."""
    gc.disable()  # no finalizers of the daemon's objects may run here
    os.setsid()
    for sig in _SHIM_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
        os.write(fd, b"corral-shim")
        os.close(fd)
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    # Holding the daemon's sockets would keep the master's connection open
    # after the daemon dies.
    os.closerange(3, report)
    os.closerange(report + 1, 1 << 20)


def _exec_app(spec: Spec, err_w: int) -> NoReturn:
    try:
        os.setsid()
        for sig in _APP_DEFAULTS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.chdir(spec.cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.execve(spec.exe, spec.argv, spec.env)
    except OSError as e:
        _write_all(err_w, str(e.errno or 0).encode())
    except BaseException:
        _write_all(err_w, b"0")
    os._exit(127)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 256):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _start_ticks(pid: int) -> int:
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    data = os.read(fd, 4096)
    os.close(fd)
    return int(data[data.rindex(b")") + 2 :].split()[19])


def _write_exit(path: str, status: int, ru: resource.struct_rusage) -> None:
    utime, stime, maxrss = float(ru.ru_utime), float(ru.ru_stime), int(ru.ru_maxrss) * 1024
    rec = (
        f'{{"status":{status},"utime":{utime!r},"stime":{stime!r},'
        f'"maxrss":{maxrss},"ended_at":{time.time()!r}}}'
    )
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    _write_all(fd, rec.encode())
    os.close(fd)
    os.rename(tmp, path)
