"""The dashboard's settings file: each key checked, applied at start, the theme saved on exit."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot

from corral.master.control import Master, MasterConfig
from corral.tui import settings
from corral.tui.app import CorralApp
from corral.tui.settings import Settings, SettingsError, load, parse, save_theme
from corral.tui.widgets.filter_bar import FilterBar
from corral.tui.widgets.help import HelpScreen, key_rows
from corral.tui.widgets.launch import LaunchDialog
from corral.tui.widgets.procs import COLUMN_NAMES
from tests.tui.cluster import build_master, clock
from tests.tui.conftest import HEARTBEAT, Workers, until
from tests.tui.test_snapshots import fake_follow, settle

REPO = Path(__file__).resolve().parents[2]
FILE = "~/.config/corral/dashboard.toml"
KNOWN = ", ".join(COLUMN_NAMES)


def error(text: str) -> str:
    """The one line `parse` refuses ``text`` with."""
    with pytest.raises(SettingsError) as caught:
        parse(text, where=FILE)
    return str(caught.value)


# --- each key, read --------------------------------------------------------------------
def test_a_full_file_reads_every_key() -> None:
    text = """
theme = "nord"
[processes]
columns = ["pid", "node", "command", "state"]
filter = "state:running app:web"
[keys]
launch = "L"
kill = ["x", "ctrl+k"]
help = "?"
"""
    got = parse(text, Path("/x.toml"))
    assert got == Settings(
        path=Path("/x.toml"),
        columns=("pid", "node", "command", "state"),
        filter="state:running app:web",
        keys={"launch": "L", "kill": "x,ctrl+k", "help": "question_mark"},
        theme="nord",
    )


def test_an_empty_file_is_the_defaults() -> None:
    assert parse("") == Settings()


def test_columns_refused_one_line_each() -> None:
    assert error('[processes]\ncolumns = ["key", "app", "cpux"]') == (
        f'{FILE}: processes.columns[2]: unknown column "cpux" (known: {KNOWN})'
    )
    assert error('[processes]\ncolumns = ["app", "command", "app"]') == (
        f'{FILE}: processes.columns[2]: column "app" given twice'
    )
    assert error("[processes]\ncolumns = []") == (
        f"{FILE}: processes.columns: empty (name at least one column)"
    )
    assert error('[processes]\ncolumns = "app"') == (
        f"{FILE}: processes.columns: expected a list of column names, got a string"
    )
    assert error("[processes]\ncolumns = [1]") == (
        f"{FILE}: processes.columns[0]: expected a string, got a number"
    )


def test_filter_must_be_a_string() -> None:
    assert error("[processes]\nfilter = true") == (
        f"{FILE}: processes.filter: expected a string, got a boolean"
    )


def test_theme_refused_with_the_valid_ones() -> None:
    line = error('theme = "nordd"')
    assert line.startswith(f'{FILE}: theme: unknown theme "nordd" (did you mean nord? known: ')
    assert "dracula, " in line and "textual-dark, " in line and "\n" not in line
    assert error("theme = 3") == f"{FILE}: theme: expected a string, got a number"


def test_keys_refused_one_line_each() -> None:
    actions = ", ".join(sorted(settings.actions()))  # every binding that has an id
    assert {"launch", "stop", "kill", "deploy", "remove", "filter", "command", "help"} <= set(
        settings.actions()
    )
    assert error('[keys]\nlanch = "x"') == f"{FILE}: keys.lanch: unknown action (known: {actions})"
    assert error('[keys]\nlaunch = "s"') == f'{FILE}: keys.launch: "s" is already the key of stop'
    assert error('[keys]\nlaunch = "?"') == f'{FILE}: keys.launch: "?" is already the key of help'
    assert error('[keys]\nlaunch = "o"') == (
        f'{FILE}: keys.launch: "o" is already the key of sort_next in the processes pane'
    )
    assert error('[keys]\nlaunch = "x"\nstop = "x"') == (
        f'{FILE}: keys.launch: "x" is already the key of stop'
    )
    assert error('[keys]\nlaunch = "hyper+nothing"') == (
        f'{FILE}: keys.launch: unknown key "hyper+nothing" (e.g. L, ctrl+l, f2, space, enter)'
    )
    assert error('[keys]\nlaunch = "L,L"') == f'{FILE}: keys.launch: key "L" given twice'
    assert error("[keys]\nlaunch = 1") == (
        f"{FILE}: keys.launch: expected a key or a list of keys, got a number"
    )


def test_keys_may_swap() -> None:
    got = parse('[keys]\nlaunch = "s"\nstop = "l"')
    assert got.keys == {"launch": "s", "stop": "l"}


def test_keys_are_named_as_textual_names_them() -> None:
    got = parse('[keys]\nlaunch = "shift+l"\nstop = ["ctrl+/", "f2"]\nhelp = "h,?"')
    assert got.keys == {"launch": "L", "stop": "ctrl+slash,f2", "help": "h,question_mark"}


def test_unknown_keys_and_bad_toml_refused() -> None:
    assert error("colour = 1") == f"{FILE}: colour: unknown setting (known: theme, processes, keys)"
    assert error("[processes]\nsort = 1") == (
        f"{FILE}: processes.sort: unknown setting (known: columns, filter)"
    )
    assert error("keys = 1") == f"{FILE}: keys: expected a table ([keys]), got a number"
    assert error("theme = ") == f"{FILE}: not TOML: Invalid value (at end of document)"


# --- where -----------------------------------------------------------------------------
def test_the_default_file_is_in_the_config_dir(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert settings.default_path(env) == tmp_path / "corral" / "dashboard.toml"
    assert settings.default_path({}) == Path.home() / ".config" / "corral" / "dashboard.toml"
    assert settings.default_path({"XDG_CONFIG_HOME": "relative"}) == settings.default_path({})


def test_a_missing_default_file_is_the_defaults(tmp_path: Path) -> None:
    got = load(None, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert got == Settings(path=tmp_path / "corral" / "dashboard.toml")


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path / "nope.toml")
    assert str(caught.value) == f"{tmp_path / 'nope.toml'}: no such file"


def test_the_default_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "corral" / "dashboard.toml"
    path.parent.mkdir()
    path.write_text('theme = "dracula"\n')
    assert load(None, {"XDG_CONFIG_HOME": str(tmp_path)}) == Settings(path=path, theme="dracula")


# --- the theme written back ------------------------------------------------------------
KEPT = """\
# my dashboard
theme = "nord"   # cold
[processes]
columns = ["key", "app"]  # narrow
[keys]
launch = "L"
"""


def test_saving_the_theme_changes_only_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text(KEPT)
    path.chmod(0o600)
    save_theme(path, "dracula")
    assert path.read_text() == KEPT.replace('"nord"   # cold', '"dracula"  # cold')
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["dashboard.toml"]  # no temporary left


def test_saving_a_theme_the_file_lacks_adds_it_before_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text("# mine\n[keys]\nlaunch = 'L'")
    save_theme(path, "gruvbox")
    assert path.read_text() == "# mine\ntheme = \"gruvbox\"\n\n[keys]\nlaunch = 'L'"
    missing = tmp_path / "new" / "dashboard.toml"
    save_theme(missing, "nord")
    assert missing.read_text() == 'theme = "nord"\n'


def test_a_theme_line_that_cannot_be_edited_safely_is_left(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    text = 'theme = """\nnord"""\n'
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        save_theme(path, "dracula")
    assert str(caught.value) == f'{path}: theme not saved: its line is not a plain theme = "..."'
    assert path.read_text() == text


# --- applied in the dashboard --------------------------------------------------------------
@asynccontextmanager
async def dashboard(
    tmp_path: Path,
    chosen: Settings,
    workers: Workers | None = None,
    size: tuple[int, int] = (140, 40),
) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard over a real master (one real worker if ``workers``) with ``chosen``."""
    config = MasterConfig(
        listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=HEARTBEAT
    )
    master = Master(config)

    def ready(address: str) -> None:
        if workers is not None:
            workers.spawn(address, master.token, "n1")

    app = CorralApp(master, on_ready=ready, settings=chosen)
    async with app.run_test(size=size) as pilot:
        if workers is not None:

            def joined() -> bool:
                """the worker alive"""
                return [n.state for n in master.cluster.nodes()] == ["alive"]

            await until(pilot, joined)
        yield app, pilot


async def test_columns_and_filter_apply_at_start(tmp_path: Path, workers: Workers) -> None:
    chosen = Settings(columns=("pid", "node", "app", "state"), filter="app:web")
    async with dashboard(tmp_path, chosen, workers) as (app, pilot):
        procs = app.dashboard.procs
        assert [c.key for c in procs.columns] == ["pid", "node", "app", "state"]
        bar = app.dashboard.query_one(FilterBar)
        assert bar.display and bar.value == "app:web"
        web = (await app.master.launch(["sleep", "60"], ["n1"], app="web")).procs[0]
        db = (await app.master.launch(["sleep", "60"], ["n1"], app="db")).procs[0]

        def only_web() -> bool:
            """both rows known, only web's shown"""
            return {web.key, db.key} <= set(procs.views) and list(procs.rows) == [web.key]

        await until(pilot, only_web)
        assert str(procs.get_cell(web.key, "pid")).strip() == str(web.pid)
        pane = app.dashboard.query_one("#procs-pane")
        assert "app:web" in f"{pane.border_title} {pane.border_subtitle}"  # the pane says so


async def test_a_rebound_key_opens_the_dialog_and_the_old_one_does_not(tmp_path: Path) -> None:
    async with dashboard(tmp_path, parse('[keys]\nlaunch = "L"')) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        assert app.screen is app.dashboard
        await pilot.press("L")
        await until(pilot, lambda: isinstance(app.screen, LaunchDialog))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard)
        footer = {key for key, b in app.screen.active_bindings.items() if b.binding.id}
        assert "L" in footer and "l" not in footer
        palette = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert re.search(r"\bL\b", palette["Launch"]) and not re.search(r"\bl\b", palette["Launch"])
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert ("anywhere", "L", "Launch a program on one, some or all nodes") in key_rows(
            app.screen.sections  # type: ignore[attr-defined]
        )


async def test_the_theme_applies_and_a_palette_change_is_saved_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text(KEPT)
    async with dashboard(tmp_path, load(path)) as (app, pilot):
        assert app.theme == "nord" and app.current_theme.name == "nord"
        app.action_change_theme()  # the palette's "Theme" command
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"dracula")

        def offered() -> bool:
            """the palette offers dracula"""
            return app.screen.query_one(CommandList).option_count == 1

        await until(pilot, offered)
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.theme == "dracula")
        assert path.read_text() == KEPT  # saved on exit, not before
    assert path.read_text() == KEPT.replace('"nord"   # cold', '"dracula"  # cold')
    assert load(path).theme == "dracula"


async def test_an_unchanged_theme_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text(KEPT)
    before = path.stat().st_mtime_ns
    async with dashboard(tmp_path, load(path)) as (app, _):
        assert app.theme == "nord"
    assert path.stat().st_mtime_ns == before and path.read_text() == KEPT


async def test_a_theme_that_cannot_be_saved_is_told_after_exit(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / "dashboard.toml"  # its directory is a file
    async with dashboard(tmp_path, Settings(path=path)) as (app, _):
        app.theme = "gruvbox"
    assert app.settings_note == f"{path}: theme not saved: Not a directory"


# --- the command line --------------------------------------------------------------------
BAD = '[processes]\ncolumns = ["key", "app", "cpux"]\n'


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "XDG_"))}
    yield {**base, "HOME": str(home)}  # the default file: HOME/.config/corral/dashboard.toml


def master_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "corral", "master", "--listen", "127.0.0.1:0"),
        *("--api", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"), *extra),
    ]


def test_master_with_a_bad_config_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    for extra in ((), ("--headless",)):
        done = subprocess.run(
            master_argv(tmp_path, "--config", str(bad), *extra),
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f'corral: {bad}: processes.columns[2]: unknown column "cpux" (known: {KNOWN})\n'
        )
        assert not (tmp_path / "state" / "token").exists()  # nothing started


def test_demo_with_a_missing_config_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "missing.toml"
    done = subprocess.run(
        [sys.executable, "-m", "corral", "demo", "--headless", "--config", str(missing)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert (done.returncode, done.stderr) == (2, f"corral: {missing}: no such file\n")


def test_master_in_a_terminal_refuses_a_bad_default_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """On a terminal the dashboard would start: the default file is read first."""
    path = Path(env["HOME"]) / ".config" / "corral" / "dashboard.toml"
    path.parent.mkdir(parents=True)
    path.write_text(BAD)
    parent, child = pty.openpty()
    try:
        done = subprocess.run(
            master_argv(tmp_path),
            env={**env, "TERM": "xterm"},
            cwd=REPO,
            stdin=child,
            stdout=child,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(child)
        os.close(parent)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f'corral: {FILE}: processes.columns[2]: unknown column "cpux" (known: {KNOWN})\n'
    )


# --- how it looks ------------------------------------------------------------------------
def test_snapshot_nord_chosen_columns_and_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snap_compare: Any
) -> None:
    """The deterministic cluster under nord, four columns, ``state:running`` shown at start."""
    master = build_master(tmp_path, monkeypatch)
    monkeypatch.setattr(master, "follow", fake_follow)  # the log, with no worker behind it
    chosen = parse(
        'theme = "nord"\n[processes]\ncolumns = ["key", "app", "state", "cpu"]\n'
        'filter = "state:running"\n[keys]\nlaunch = "L"\n'
    )
    app = CorralApp(master, start_master=False, clock=clock, settings=chosen)
    try:
        assert snap_compare(app, terminal_size=(120, 40), run_before=settle)
    finally:
        master.events.close()


def test_master_in_a_terminal_runs_the_dashboard_with_the_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A real ``corral master`` on a terminal: the file's quit key (Q) is what ends it."""
    path = Path(env["HOME"]) / ".config" / "corral" / "dashboard.toml"
    path.parent.mkdir(parents=True)
    path.write_text('theme = "nord"\n[keys]\nquit = "Q"\n')
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        master_argv(tmp_path),
        env={**env, "TERM": "xterm-256color"},
        cwd=REPO,
        stdin=child,
        stdout=child,
        stderr=child,  # Textual draws on stderr
    )
    os.close(child)
    screen = bytearray()

    def read_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}: {bytes(screen[-2000:])!r}")
            if select.select([parent], [], [], min(left, 0.2))[0]:
                with contextlib.suppress(OSError):  # EIO: the child side closed
                    screen.extend(os.read(parent, 65536))

    try:
        read_until(lambda: b"Launch" in screen, "the dashboard's footer")
        os.write(parent, b"Q")
        read_until(lambda: proc.poll() is not None, "the master to quit on Q")
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(parent)
