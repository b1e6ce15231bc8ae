"""`make bench`: run every benchmark, each printing its figure beside a reference.

With no names, each benchmark runs in a child process of its own (``python
-m bench NAME``) with a time limit, so one that hangs costs `LIMIT` seconds
and a ``[FAIL]`` line, not the whole run: a minute before the limit the
child prints every thread's stack (``faulthandler``), then it is
interrupted (its clusters stop in their ``finally``), then killed with
everything it started.  Named benchmarks run in this process.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback

from bench.report import machine

BENCHES = [
    "heartbeat",
    "reconnect",
    "worker_idle",
    "launch",
    "cli_start",
    "heal",
    "tui_feed",
    "log_pane",
    "log_follow",
    "log_open",
    "log_merged",
    "deploy",
    "soak",
    "scheduler",
    "submit",
    "jobs_restart",
    "bundle",
    "failover",
]


LIMIT = 600.0  # seconds a benchmark may take (the longest takes about 210)
GRACE = 20.0  # after SIGINT, seconds to stop what it started before SIGKILL
CRASHED = 3  # a child's exit code when its benchmark raised (1: a target missed)


def _child(name: str) -> int:
    """Run ``name`` in a process group of its own: its exit code, -1 if it overran."""
    cmd = [sys.executable, "-m", "bench", name]
    env = dict(os.environ, CORRAL_BENCH_LIMIT=str(LIMIT))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait(LIMIT)
    except subprocess.TimeoutExpired:
        _end(proc)
        return -1
    except BaseException:  # Ctrl-C on make bench: the child's clusters stop too
        _end(proc)
        raise


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Interrupt the child's group, give it `GRACE` seconds, then kill what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main(argv: list[str]) -> int:
    if not argv:
        print(f"corral benchmarks on {machine()}", flush=True)
        failed = 0
        for name in BENCHES:
            code = _child(name)
            if code == -1:
                print(f"[FAIL] {name}: did not end within {LIMIT:.0f} s (stacks above)", flush=True)
            elif code == CRASHED:
                print(f"[FAIL] {name}: raised (traceback above)", flush=True)
            failed += code != 0
        return 1 if failed else 0
    limit = float(os.environ.get("CORRAL_BENCH_LIMIT", "0"))
    if not limit:
        print(f"corral benchmarks on {machine()}", flush=True)
        return _run(argv)
    faulthandler.dump_traceback_later(max(1.0, limit - 60))  # where it hangs, if it does
    try:
        return _run(argv)
    except Exception:
        traceback.print_exc()
        return CRASHED


def _run(names: list[str]) -> int:
    missed = 0
    for name in names:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"bench.{name}":
                raise
            print(f"[SKIP] {name}: not written yet", flush=True)
            continue
        t0 = time.monotonic()
        for text in mod.run():
            print(text, flush=True)
            missed += text.startswith("[MISS]")
        print(f"       ({name} took {time.monotonic() - t0:.0f}s)", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
