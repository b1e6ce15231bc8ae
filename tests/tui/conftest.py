"""Fixtures for the dashboard tests: real worker daemons, and cleanup of all they started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from corral.daemon import procfs, records
from corral.master.control import Master, MasterConfig

HEARTBEAT = 0.5


class Workers:
    """Worker daemons started as real processes, each with its own root."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roots: list[Path] = []

    def spawn(self, address: str, token: str, *names: str, args: Sequence[str] = ()) -> None:
        """Start a worker per name; ``args`` go to each (``--ssh-port N``, say)."""
        env = {**os.environ, "CORRAL_TOKEN": token}
        for name in names:
            root = self.base / name
            self.roots.append(root)
            cmd = [
                sys.executable,
                "-m",
                "corral.daemon",
                "--master",
                address,
                "--root",
                str(root),
                *args,
            ]
            log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115
            with log:
                self.procs.append(
                    subprocess.Popen([*cmd, "--name", name], env=env, stdout=log, stderr=log)
                )

    def stop(self) -> None:
        """Kill every program the workers started, then the workers; reap all."""
        for root in self.roots:
            for rec in records.launch_records(root / "run"):
                if procfs.is_same(rec.pid, rec.start):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(rec.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    base = tmp_path / "workers"
    base.mkdir()
    started = Workers(base)
    try:
        yield started
    finally:
        started.stop()


async def until(pilot: Pilot[object], check: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            notes = [n.message for n in pilot.app._notifications]
            raise AssertionError(
                f"timed out after {timeout}s waiting for {check.__doc__ or check}; notes: {notes}"
            )
        await pilot.pause(0.05)


@contextlib.asynccontextmanager
async def dashboard(
    workers: Workers,
    state_dir: Path,
    nodes: Sequence[str] = ("n1", "n2"),
    size: tuple[int, int] = (120, 40),
    worker_args: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    **app_kwargs: Any,
) -> AsyncIterator[tuple[Any, Pilot[None]]]:
    """The dashboard over a real master whose real workers ``nodes`` are all alive and shown.

    ``config`` adds `MasterConfig` fields (``ssh=...``); ``app_kwargs`` go to `CorralApp`.
    """
    from corral.tui.app import CorralApp
    from corral.tui.widgets.nodes import NodesTable

    master = Master(
        MasterConfig(
            listen="127.0.0.1:0",
            api="127.0.0.1:0",
            state_dir=state_dir,
            heartbeat=HEARTBEAT,
            **(config or {}),
        )
    )

    def ready(address: str) -> None:
        workers.spawn(address, master.token, *nodes, args=worker_args)

    app = CorralApp(master, on_ready=ready, **app_kwargs)
    async with app.run_test(size=size) as pilot:

        def all_alive() -> bool:
            """every worker alive, and on screen"""
            shown = app.dashboard.query_one(NodesTable).row_count
            states = [n.state for n in master.cluster.nodes()]
            return states == ["alive"] * len(nodes) and shown == len(nodes)

        # The pane refreshes on a coalescing tick after the model changes; keys
        # pressed before it would see only the node that joined first.
        await until(pilot, all_alive)
        yield app, pilot
