"""The corral dashboard app: starts the master and its API, shows the `Dashboard`, stops them.

The CLI calls `run_dashboard`; tests build `CorralApp` directly.  The app
composes the master's parts as the headless master does: one `Deployer`
for the master, shared by the control API (which it starts) and the
dashboard's dialogs.  Quitting stops the master's servers only: workers and
their programs keep running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from corral.master.api import ApiServer, start_api
from corral.master.control import Master
from corral.master.deployer import Deployer
from corral.transport.loop import run as run_loop
from corral.tui.widgets.dashboard import Dashboard, help_sections


class CorralApp(App[None]):
    """Full-screen dashboard over one `Master`, in the master's own event loop."""

    CSS_PATH = "app.tcss"
    TITLE = "corral"
    # Operators (and `make demo`) expect Ctrl-C to leave a terminal program.
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(
        self,
        master: Master,
        start_master: bool = True,
        on_ready: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        escalate_after: float = 5.0,
    ) -> None:
        super().__init__()
        self.master = master
        self.deployer = Deployer(master)
        self.api: ApiServer | None = None
        self.start_master = start_master
        self.on_ready = on_ready
        self.clock = clock
        self.escalate_after = escalate_after
        self._started = False

    def get_default_screen(self) -> Screen[None]:
        return Dashboard(
            self.master, self.deployer, clock=self.clock, escalate_after=self.escalate_after
        )

    @property
    def dashboard(self) -> Dashboard:
        screen = self.screen_stack[0]
        assert isinstance(screen, Dashboard)
        return screen

    async def on_mount(self) -> None:
        if self.start_master:
            try:
                await self.master.start()
                self.api = await start_api(self.master, self.deployer)
            except OSError as e:
                await self.master.stop()  # whatever did bind (the worker port, say) is let go
                self.exit(return_code=1, message=f"corral master: {e}")  # names the step
                return
            self._started = True
        self.dashboard.address = self.master.listen_address
        if self.on_ready is not None and self.master.listen_address:
            self.on_ready(self.master.listen_address)

    async def on_unmount(self) -> None:
        if self.api is not None:
            await self.api.stop()
        if self._started:
            await self.master.stop()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The palette offers every key's action by name, then Textual's own."""
        dash = self.dashboard
        targets = {"anywhere": dash, "processes": dash.procs, "log": dash.log_pane}
        for where, bindings in help_sections():
            node = targets.get(where)
            for b in bindings:
                if node is not None and isinstance(b, Binding) and b.description:
                    run = partial(node.run_action, b.action)
                    yield SystemCommand(b.description, f"{where}: {b.key}", run)
        yield from super().get_system_commands(screen)


def run_dashboard(master: Master, on_ready: Callable[[str], None] | None = None) -> int:
    """Run the dashboard until the operator quits; the process exit code."""
    app = CorralApp(master, on_ready=on_ready)
    run_loop(app.run_async())  # App.run(), on the master's uvloop event loop
    return app.return_code or 0
