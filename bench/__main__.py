"""`make bench`: run every benchmark, each printing its figure beside a reference."""

from __future__ import annotations

import importlib
import sys
import time

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


def main(argv: list[str]) -> int:
    names = argv or BENCHES
    print(f"corral benchmarks on {machine()}", flush=True)
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
