"""``python -m corral.tui.screenshots DIR``: pictures of the real dashboard on a demo cluster.

Starts a real master and three real worker daemons in a temporary directory,
launches a few programs, saves SVG screenshots (main screen, launch dialog,
help, the deploy dialog's report of a dry run, log pane) into DIR, and a PNG
of each when ``rsvg-convert`` or ``cairosvg`` is installed.  Everything it
started is stopped before it exits: the programs through the master's kill
verb (then SIGKILL to any survivor's process group), then the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from corral.master.control import Master, MasterConfig
from corral.tui.app import CorralApp
from corral.tui.widgets.deploy import DeployDialog

NODES = ("node1", "node2", "node3")
SIZE = (120, 40)
TICKER = (
    'i=0; while :; do i=$((i+1)); echo "step $i: residual 0.$((1000 - i % 1000))"; sleep 0.2; done'
)
PROGRAMS: list[tuple[tuple[str, ...], str, list[str]]] = [
    (NODES, "solver", ["sh", "-c", TICKER]),
    (("node1",), "sleep", ["sleep", "600"]),
    (("node2",), "build", ["sh", "-c", "echo compiling; sleep 0.5; echo done"]),
    (("node3",), "check", ["sh", "-c", "echo 'assertion failed' >&2; exit 3"]),
]


class Demo:
    """The worker daemons of the demo cluster, started as real processes."""

    def __init__(self, base: Path, master: Master) -> None:
        self.base = base
        self.master = master
        self.workers: list[asyncio.subprocess.Process] = []

    def spawn(self, address: str) -> None:
        """`CorralApp` ``on_ready`` hook: start the workers against the real port."""
        self._task = asyncio.get_running_loop().create_task(self._spawn(address))

    async def _spawn(self, address: str) -> None:
        env = {**os.environ, "CORRAL_TOKEN": self.master.token}
        for name in NODES:
            root = self.base / name
            log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115
            with log:
                self.workers.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "corral.daemon", "--master", address,
                        "--root", str(root), "--name", name,
                        env=env, stdout=log, stderr=log,
                    )
                )  # fmt: skip

    async def stop(self) -> None:
        """Kill every program, then stop the workers; nothing is left running."""
        alive = [p for p in self.master.cluster.procs() if p.alive]
        if alive and self.master.server is not None:
            with contextlib.suppress(Exception):
                await self.master.kill_procs([p.key for p in alive])
        for proc in alive:  # every node is this machine: make sure
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.terminate()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.wait(), 10)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        self.workers.clear()


async def until(
    pilot: Pilot[None], check: Callable[[], bool], what: str, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)


async def capture(out: Path, base: Path) -> list[Path]:
    """Run the dashboard on a fresh demo cluster and save its screens into ``out``."""
    config = MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=base / "state")
    master = Master(config)
    demo = Demo(base, master)
    app = CorralApp(master, on_ready=demo.spawn)
    saved: list[Path] = []

    def shot(name: str) -> None:
        saved.append(Path(app.save_screenshot(f"{name}.svg", path=str(out))))

    try:
        async with app.run_test(size=SIZE) as pilot:
            alive = lambda: sum(n.state == "alive" for n in master.cluster.nodes()) == 3  # noqa: E731
            await until(pilot, alive, "three alive workers")
            for nodes, app_name, argv in PROGRAMS:
                await master.launch(argv, nodes=nodes, app=app_name)
            ended = lambda: sum(not p.alive for p in master.cluster.procs()) == 2  # noqa: E731
            await until(pilot, ended, "the short programs to end")
            await pilot.pause(4)  # a few heartbeats: CPU sparklines and logs fill in
            dash = app.dashboard
            dash.procs.select(next(p.key for p in master.cluster.procs() if p.app == "solver"))
            await pilot.pause(1)
            shot("main")
            await pilot.press("l")
            await pilot.press(*"./simulate", "space", *"--steps", "space", *"1000")
            await pilot.pause(0.3)
            shot("launch")
            await pilot.press("escape", "question_mark")
            await pilot.pause(0.3)
            shot("help")
            await pilot.press("escape")
            await deploy_dry_run(pilot, base)
            shot("deploy")
            await pilot.press("escape")
            jobs = master.jobs
            sweep = await jobs.submit(["sleep", "600"], count=4, mem=2 << 30, name="sweep")
            await jobs.submit(["sleep", "601"], count=3, mem=12 << 30, spread=True, name="sim")
            await jobs.submit(["sleep", "602"], count=2, mem=10 << 30, name="post")
            await jobs.submit(["sleep", "603"], mem=1 << 30, name="report")
            running = lambda: jobs.get(sweep.id).running == 4  # noqa: E731
            await until(pilot, running, "the sweep's replicas to run")
            await pilot.press("j")
            await pilot.pause(0.5)
            shot("jobs")
            # Cancelled now: stopping the workers' programs would free room,
            # and the queued jobs would start on workers about to go.
            await jobs.cancel([job.id for job in jobs.jobs()])
            await pilot.press("escape")
            dash.log_pane.focus()
            app.screen.maximize(dash.log_pane)
            await pilot.pause(1)
            shot("log")
            await demo.stop()  # while the master still runs, so its kill verb works
    finally:
        await demo.stop()
    return saved


async def deploy_dry_run(pilot: Pilot[None], base: Path) -> None:
    """Fill the deploy dialog with a script for every node, as a dry run (no sshd here)."""
    script = base / "solve.sh"
    script.write_text('#!/bin/sh\n# the demo\'s solver, packaged\nexec sh -c "$TICKER"\n')
    script.chmod(0o755)
    await pilot.press("d")
    await pilot.press(*str(script), "tab", *"solver", "tab", "tab", "space", "tab", "space")
    await pilot.press("ctrl+s")
    dialog = pilot.app.screen
    assert isinstance(dialog, DeployDialog)
    await until(pilot, lambda: dialog.result is not None, "the deploy dry run's report")
    await pilot.pause(0.3)


def to_png(svg: Path) -> Path | None:
    """A PNG next to ``svg`` when a converter is installed; None otherwise."""
    png = svg.with_suffix(".png")
    data = spaces_kept(svg.read_bytes())
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", str(png)], input=data, check=True)
        return png
    try:
        cairosvg = importlib.import_module("cairosvg")
    except ImportError:
        return None
    cairosvg.svg2png(bytestring=data, write_to=str(png))
    return png


def spaces_kept(svg: bytes) -> bytes:
    """Rich's SVG with ``xml:space="preserve"`` on its root.

    Without it the converters drop the spaces that begin a text run, and
    the header drew as "3 alive◐ 0 suspect" and "4 running1 ended"
    (browsers, which show the SVG in the README, keep them either way).
    """
    return svg.replace(b"<svg ", b'<svg xml:space="preserve" ', 1)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-shots-") as tmp:
        saved = asyncio.run(capture(out, Path(tmp)))
    for svg in saved:
        png = to_png(svg)
        print(f"{svg}" + (f"  {png.name}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
