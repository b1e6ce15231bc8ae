"""The corral dashboard app: starts the master and its API, shows the `Dashboard`, stops them.

The CLI calls `run_dashboard`; tests build `CorralApp` directly.  The app
composes the master's parts as the headless master does: one `Deployer`
for the master, shared by the control API (which it starts) and the
dashboard's dialogs.  Quitting stops the master's servers only: workers and
their programs keep running.

The operator's settings file (`corral.tui.settings`) sets the theme, keys,
columns and filter at start; a theme chosen in the palette is saved to it
on exit.
"""

from __future__ import annotations

import logging
import select
import sys
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
from corral.tui.settings import Settings, SettingsError, rebind, save_theme, shown
from corral.tui.widgets.dashboard import Dashboard, help_sections
from corral.tui.widgets.help import key_name

log = logging.getLogger("corral.tui")
TERMINAL_CHECK = 1.0  # seconds between looks at whether the terminal is still there


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
        settings: Settings | None = None,
        *,
        reach: str = "",
        demo: bool = False,
        deploy_notice: Callable[[], str] | None = None,
    ) -> None:
        super().__init__()
        # How another shell reaches this master and whether q ends a demo (the
        # header reads them), and why deploys cannot work here (the deploy dialog asks).
        self.reach, self.demo, self.deploy_notice = reach, demo, deploy_notice
        self.settings = settings or Settings()
        self.settings_note = ""  # why the theme could not be saved, told after exit
        self._theme_at_start = ""
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
            self.master,
            self.deployer,
            clock=self.clock,
            escalate_after=self.escalate_after,
            columns=self.settings.columns or (),
            start_filter=self.settings.filter,
        )

    @property
    def dashboard(self) -> Dashboard:
        screen = self.screen_stack[0]
        assert isinstance(screen, Dashboard)
        return screen

    async def on_mount(self) -> None:
        self._apply_settings()
        if self.start_master:
            try:
                await self.master.start()
                self.api = await start_api(self.master, self.deployer)
            except OSError as e:
                await self.master.stop()  # whatever did bind (the worker port, say) is let go
                self.exit(return_code=1, message=f"corral master: {e}")  # names the step
                return
            self._started = True
        self.dashboard.address = self.master.reachable(self.master.listen_address)
        if self.on_ready is not None and self.master.listen_address:
            self.on_ready(self.master.listen_address)
        if not self.is_headless and sys.__stdin__ is not None:
            self.set_interval(TERMINAL_CHECK, partial(self._watch_terminal, sys.__stdin__.fileno()))

    def _watch_terminal(self, fd: int) -> None:
        """Quit, as with q, once the terminal hung up (its window closed, its SSH
        session dropped).  The kernel tells only the session's leader (a shell,
        ``make``) with SIGHUP, and Textual's input thread would read the dead
        terminal's end of file for ever, a core's worth of CPU."""
        if terminal_gone(fd):
            log.warning("the terminal hung up: stopping the dashboard")
            self.exit(return_code=1, message="corral: the terminal hung up")

    async def on_unmount(self) -> None:
        self._save_theme()
        if self.api is not None:
            await self.api.stop()
        if self._started:
            await self.master.stop()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The palette offers every key's action by name, then Textual's own."""
        dash = self.dashboard
        targets = {"anywhere": dash, "processes": dash.procs, "log": dash.log_pane}
        for where, bindings in rebind(help_sections(), self.settings.keys):
            node = targets.get(where)
            for b in bindings:
                if node is not None and isinstance(b, Binding) and b.description:
                    run = partial(node.run_action, b.action)
                    yield SystemCommand(b.description, f"{where}: {key_name(b)}", run)
        # Textual's own, but its Quit: ours (q) is already there, saying what stays running.
        yield from (c for c in super().get_system_commands(screen) if c.title != "Quit")

    # --- settings (corral.tui.settings) ------------------------------------------
    def _apply_settings(self) -> None:
        """The file's theme and keys (its columns and filter: the dashboard's own, at mount)."""
        settings = self.settings
        if settings.theme:
            self.theme = settings.theme
        self._theme_at_start = self.theme
        if settings.keys:
            self.set_keymap(settings.keys)

    def _save_theme(self) -> None:
        """A theme chosen in the palette goes back into the settings file."""
        path = self.settings.path
        if path is None or self.theme == self._theme_at_start:
            return
        try:
            save_theme(path, self.theme)
        except SettingsError as e:
            self.settings_note = str(e)
        except OSError as e:
            self.settings_note = f"{shown(path)}: theme not saved: {e.strerror or e}"


def terminal_gone(fd: int) -> bool:
    """Whether the terminal on ``fd`` hung up (or ``fd`` is no longer open)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # hang-ups and errors are always reported
    try:
        events = poller.poll(0)
    except OSError:
        return True
    gone = select.POLLHUP | select.POLLERR | select.POLLNVAL
    return any(mask & gone for _, mask in events)


def run_dashboard(
    master: Master,
    on_ready: Callable[[str], None] | None = None,
    settings: Settings | None = None,
    *,
    reach: str = "",
    demo: bool = False,
    deploy_notice: Callable[[], str] | None = None,
) -> int:
    """Run the dashboard until the operator quits; the process exit code."""
    app = CorralApp(
        master,
        on_ready=on_ready,
        settings=settings,
        reach=reach,
        demo=demo,
        deploy_notice=deploy_notice,
    )
    run_loop(app.run_async())  # App.run(), on the master's uvloop event loop
    if app.settings_note:
        print(f"corral: {app.settings_note}", file=sys.stderr)
    return app.return_code or 0
