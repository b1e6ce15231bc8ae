"""Opening a 300,000-line log at its end, and Home to its line 1.

A real worker runs ``seq 1 300000`` (then sleeps, so the log stays put).
The dashboard (`CorralApp` with a real, started `Master`, headless at
120x40, in this process) selects it: the time from the selection to the
end of the first frame that shows line 300000 at the bottom of the log
pane.  Then Home: the time to the end of the first frame that shows line 1
at its top (the first page is fetched from the worker by byte offset).
Each ROUNDS times (another process selected in between, End after Home);
the median and the worst.  Reference in the same run: ``tail -n 40`` on
the log file, as a process.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.screen import Screen

from bench.log_pane import _spawn_worker, _until
from bench.report import line
from corral.master.control import Master, MasterConfig

LINES = 300_000
ROUNDS = 5
OPEN_MS = 150.0
HOME_MS = 300.0


class FrameProbe:
    """After every frame, checks a condition; ``wait()`` returns when a frame met it."""

    def __init__(self) -> None:
        self.check: Callable[[], bool] | None = None
        self.met = asyncio.Event()
        self._original = Screen._on_timer_update

    def __enter__(self) -> FrameProbe:
        original = self._original

        def on_timer_update(screen: Screen[Any]) -> None:
            original(screen)
            if self.check is not None and self.check():
                self.check = None
                self.met.set()

        Screen._on_timer_update = on_timer_update  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Screen._on_timer_update = self._original  # type: ignore[method-assign]

    def arm(self, check: Callable[[], bool]) -> None:
        self.met.clear()
        self.check = check

    async def wait(self, timeout: float) -> None:
        await asyncio.wait_for(self.met.wait(), timeout)


def _tail_ms(path: Path) -> list[float]:
    out = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        subprocess.run(["tail", "-n", "40", str(path)], stdout=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _measure(base: Path) -> dict[str, Any]:
    from corral.tui.app import CorralApp

    master = Master(
        MasterConfig(state_dir=base / "master", listen="127.0.0.1:0", api="127.0.0.1:0")
    )
    opens: list[float] = []
    homes: list[float] = []
    window = 0
    with FrameProbe() as probe:
        app = CorralApp(master)
        async with app.run_test(size=(120, 40)):
            await _until(lambda: master.listen_address, 10, "the master")
            worker = _spawn_worker(base, master.listen_address, master.token)
            try:
                await _until(lambda: master.cluster.node_state("bench") == "alive", 20, "worker")
                big = await master.launch(
                    ["sh", "-c", f"seq 1 {LINES}; exec sleep 120"], nodes=["bench"], app="big"
                )
                other = await master.launch(["sleep", "120"], nodes=["bench"], app="other")
                key, other_key = big.procs[0].key, other.procs[0].key
                path = base / "node" / "apps" / "big" / "logs" / f"{big.procs[0].launch}.log"
                size = len("".join(f"{i}\n" for i in range(1, LINES + 1)))
                await _until(lambda: path.exists() and path.stat().st_size == size, 30, "seq")
                dash = app.dashboard
                pane = dash.log_pane
                await _until(
                    lambda: key in dash.procs.rows and other_key in dash.procs.rows, 5, "rows"
                )
                for _ in range(ROUNDS):
                    dash.procs.select(other_key)
                    await _until(lambda: pane.key == other_key, 5, "the other process")
                    await asyncio.sleep(0.3)
                    probe.arm(lambda: pane.visible_lines()[-1:] == [str(LINES)])
                    t0 = time.perf_counter()
                    dash.procs.select(key)
                    await probe.wait(10)
                    opens.append((time.perf_counter() - t0) * 1000)
                    await asyncio.sleep(0.2)
                    probe.arm(lambda: pane.visible_lines()[:1] == ["1"])
                    t0 = time.perf_counter()
                    pane.action_home()
                    await probe.wait(10)
                    homes.append((time.perf_counter() - t0) * 1000)
                    window = max(window, pane.line_count)
                    pane.action_follow()
                    await _until(lambda: pane.attached, 10, "back at the end")
            finally:
                worker.terminate()
                worker.wait(10)
    return {"opens": opens, "homes": homes, "tail": _tail_ms(path), "window": window}


def run() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_measure(Path(tmp)))
    opens, homes, tail = got["opens"], got["homes"], got["tail"]
    ref = f"tail -n 40 on the file: median {statistics.median(tail):.1f} ms"
    return [
        line(
            f"log pane: open a {LINES:,}-line log at its end, to the first screen",
            f"median {statistics.median(opens):.0f} ms, worst {max(opens):.0f} ms "
            f"over {len(opens)} opens",
            ref,
            f"<= {OPEN_MS:g} ms",
            max(opens) <= OPEN_MS,
        ),
        line(
            f"log pane: Home to line 1 of the {LINES:,}-line log (paged from the worker)",
            f"median {statistics.median(homes):.0f} ms, worst {max(homes):.0f} ms; "
            f"the pane held at most {got['window']:,} lines",
            ref,
            f"<= {HOME_MS:g} ms",
            max(homes) <= HOME_MS,
        ),
    ]


if __name__ == "__main__":
    for text in run():
        print(text)
    sys.exit(0)
