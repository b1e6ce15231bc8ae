"""Pilot tests: keys pressed in the dashboard act on real workers running real programs."""

from __future__ import annotations

import contextlib
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from corral.__main__ import build_parser
from corral.master import verbs
from corral.master.control import Master, MasterConfig
from corral.master.httpd import Request
from corral.master.model import ProcView
from corral.tui.app import CorralApp
from corral.tui.widgets.command_line import CommandLine, CommandOutput
from corral.tui.widgets.confirm import ConfirmDialog
from corral.tui.widgets.launch import LaunchDialog
from corral.tui.widgets.log_pane import LogPane
from corral.tui.widgets.nodes import NodesTable
from tests.procs import gone, ignores, runs
from tests.tui.conftest import HEARTBEAT, Workers, dashboard, until

NODES = ("n1", "n2")


@pytest.fixture
async def running(tmp_path: Path, workers: Workers) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard over a real master with two real workers, all alive."""
    async with dashboard(workers, tmp_path / "state", NODES, escalate_after=1.5) as running:
        yield running


def proc(app: CorralApp, key: str) -> ProcView:
    view = app.master.cluster.proc(key)
    assert view is not None
    return view


async def type_text(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


async def launch(app: CorralApp, pilot: Pilot[None], command: str) -> str:
    """Launch ``command`` through the dialog; the new row gets selected: its key."""
    before = set(app.dashboard.procs.views)
    await pilot.press("l")
    await until(pilot, lambda: isinstance(app.screen, LaunchDialog))
    await type_text(pilot, command)
    await pilot.press("enter")

    def new_row_selected() -> bool:
        """the launched process selected"""
        key = app.dashboard.procs.selected
        return app.screen is app.dashboard and key is not None and key not in before

    await until(pilot, new_row_selected)
    key = app.dashboard.procs.selected
    assert key is not None
    return key


async def execs(pilot: Pilot[None], key: str, argv: list[str]) -> psutil.Process:
    """Wait until the process ``key`` runs ``argv``: a launch's reply comes before its exec."""
    pid = int(key.split(":")[1])

    def execd() -> bool:
        """the launched process to exec its program"""
        return runs(pid, argv)

    await until(pilot, execd)
    return psutil.Process(pid)


async def confirm(app: CorralApp, pilot: Pilot[None], key: str) -> str:
    """Press ``key``, check the dialog names what will be signalled, confirm; its text."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
    dialog = app.screen
    assert isinstance(dialog, ConfirmDialog)
    text = dialog.title_text + "\n" + "\n".join(dialog.lines)
    await pilot.press("y")
    return text


async def ended(pilot: Pilot[None], app: CorralApp, key: str, reason: str) -> None:
    def done() -> bool:
        """the process to end"""
        return not proc(app, key).alive

    await until(pilot, done)
    assert proc(app, key).reason == reason


async def test_launch_runs_a_real_process_and_stop_ends_it_with_sigint(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, "sleep 60")
    node, pid = key.split(":")
    assert node == app.dashboard.query_one(NodesTable).selected == "n1"  # cursor's node
    await execs(pilot, key, ["sleep", "60"])

    text = await confirm(app, pilot, "s")
    assert "SIGINT" in text and key in text and "sleep 60" in text
    await ended(pilot, app, key, "killed by SIGINT")
    assert gone(int(pid))

    def marker() -> bool:
        """the end marker in the log pane"""
        return any("ended: killed by SIGINT" in line for line in app.dashboard.log_pane.lines)

    await until(pilot, marker)
    # The stop was asked for: the header counts it as ended, not failed, and so do the words.
    counts = app.dashboard.tally.counts
    await until(pilot, lambda: counts["ended"] == 1)
    assert counts["failed"] == 0 and counts["running"] == 0
    await pilot.press("slash", *"state:failed", "enter")
    assert key not in app.dashboard.procs.rows
    await pilot.press("escape", "slash", *"state:ended", "enter")
    assert key in app.dashboard.procs.rows
    assert "(stopped)" in str(app.dashboard.procs.get_cell(key, "reason"))


async def test_an_empty_processes_pane_says_what_to_do(running) -> None:
    app, pilot = running
    pane = app.dashboard.query_one("#procs-pane")
    assert "l launches a program" in str(pane.border_subtitle)
    key = await launch(app, pilot, "sleep 62")
    await until(pilot, lambda: not pane.border_subtitle)  # a row: nothing to say
    await pilot.press("slash", *"state:failed", "enter")
    assert key not in app.dashboard.procs.rows
    assert str(pane.border_subtitle) == "no process matches the filter"


async def test_launch_dialog_takes_variables_before_the_command_as_a_shell_does(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, "MODE=fast EMPTY= sleep 61")
    process = await execs(pilot, key, ["sleep", "61"])
    env = process.environ()
    assert env["MODE"] == "fast" and env["EMPTY"] == ""
    assert "PATH" in env  # laid over the worker's own


async def test_colon_launch_without_a_node_runs_on_the_selected_node(running) -> None:
    """``:launch -- prog`` goes where ``l`` would: the node under the nodes cursor."""
    app, pilot = running
    nodes = app.dashboard.query_one(NodesTable)
    nodes.focus()
    await pilot.press("down")
    assert nodes.selected == "n2"
    await pilot.press("colon")
    await type_text(pilot, "launch -- sleep 67")
    await pilot.press("enter")

    def launched() -> bool:
        """the process launched and selected"""
        key = app.dashboard.procs.selected
        return key is not None and proc(app, key).command == "sleep 67"

    await until(pilot, launched)
    key = app.dashboard.procs.selected
    assert key is not None and key.startswith("n2:")
    await execs(pilot, key, ["sleep", "67"])


async def test_kill_marked_processes_with_sigkill(running) -> None:
    app, pilot = running
    first = await launch(app, pilot, "sleep 61")
    second = await launch(app, pilot, "sleep 62")
    procs = app.dashboard.procs
    for key in (first, second):
        procs.select(key)
        await pilot.press("space")
    assert procs.marked == {first, second}

    text = await confirm(app, pilot, "k")
    assert "SIGKILL" in text and first in text and second in text
    await ended(pilot, app, first, "killed by SIGKILL")
    await ended(pilot, app, second, "killed by SIGKILL")
    assert procs.marked == set()


async def test_ctrl_k_kills_the_selected_process(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, "sleep 63")
    await confirm(app, pilot, "ctrl+k")
    await ended(pilot, app, key, "killed by SIGKILL")


async def test_cancelled_confirmation_sends_nothing(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, "sleep 64")
    await pilot.press("s")
    await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
    await pilot.press("escape")
    await until(pilot, lambda: app.screen is app.dashboard)
    await pilot.pause(HEARTBEAT * 2)  # a beat later it still runs
    assert proc(app, key).alive


async def test_escalate_kills_a_program_that_ignores_sigint(running) -> None:
    app, pilot = running
    await pilot.press("colon")
    await type_text(pilot, "launch --node n2 --app stubborn -- sh -c 'trap \"\" INT; sleep 60'")
    await pilot.press("enter")

    def launched() -> bool:
        """the command line's launch to be selected"""
        key = app.dashboard.procs.selected
        return key is not None and key.startswith("n2:")

    await until(pilot, launched)
    key = app.dashboard.procs.selected
    assert key is not None
    assert proc(app, key).app == "stubborn"
    pid, script = int(key.split(":")[1]), ["sh", "-c", 'trap "" INT; sleep 60']
    await until(pilot, lambda: ignores(pid, script, signal.SIGINT))  # the trap is set

    text = await confirm(app, pilot, "e")
    assert "SIGINT" in text and "SIGKILL" in text and key in text

    def counting_down() -> bool:
        """the countdown in the row"""
        return str(app.dashboard.procs.get_cell(key, "state")).startswith("stopping ")

    await until(pilot, counting_down)
    assert proc(app, key).alive  # SIGINT was ignored
    await ended(pilot, app, key, "killed by SIGKILL")
    await until(pilot, lambda: "stopping" not in str(app.dashboard.procs.get_cell(key, "state")))


async def test_log_pane_follows_the_selected_process(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, "sh -c 'for i in 1 2 3; do echo line $i; done; exec sleep 60'")
    pane = app.dashboard.log_pane
    assert isinstance(pane, LogPane)

    def shown() -> bool:
        """the three lines in the log pane"""
        return pane.lines[:3] == ["line 1", "line 2", "line 3"]

    await until(pilot, shown)
    assert pane.border_subtitle == "following"
    await pilot.press("ctrl+k", "y")
    await ended(pilot, app, key, "killed by SIGKILL")
    await until(pilot, lambda: pane.lines[-1:] == [f"── {key} ended: killed by SIGKILL ──"])


async def test_command_line_errors_show_in_one_line(running) -> None:
    app, pilot = running
    await pilot.press("colon")
    await type_text(pilot, "stop nosuch:123")
    await pilot.press("enter")
    hint = app.dashboard.query_one("#command-hint")

    def error_shown() -> bool:
        """the error in the hint line"""
        return "unknown node: nosuch" in str(hint.render())

    await until(pilot, error_shown)
    assert hint.has_class("error")


async def test_typing_a_command_does_not_filter_the_processes(running) -> None:
    app, pilot = running
    key = await launch(app, pilot, "sleep 30")
    procs = app.dashboard.procs
    await pilot.press("colon")
    await type_text(pilot, "stop nosuch:123")
    await pilot.press("enter")  # an error keeps the command line open
    hint = app.dashboard.query_one("#command-hint")
    await until(pilot, lambda: "unknown node" in str(hint.render()))
    assert key in procs.views and procs.row_count >= 1
    assert "filter" not in str(app.dashboard.query_one("#procs-pane").border_subtitle or "")


async def test_launch_errors_stay_in_the_dialog(running) -> None:
    app, pilot = running
    await pilot.press("l")
    await until(pilot, lambda: isinstance(app.screen, LaunchDialog))
    await type_text(pilot, "/no/such/program")
    await pilot.press("enter")
    dialog = app.screen
    error = dialog.query_one("#launch-error")

    def failed() -> bool:
        """the worker's error in the dialog"""
        text = str(error.render())
        return bool(text) and text != "Launching…"

    await until(pilot, failed)
    assert app.screen is dialog
    assert "n1" in str(error.render())


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
async def test_quit_leaves_workers_and_programs_running(
    tmp_path: Path, workers: Workers, key: str
) -> None:
    config = MasterConfig(
        listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path / "state", heartbeat=HEARTBEAT
    )
    master = Master(config)
    app = CorralApp(master, on_ready=lambda address: workers.spawn(address, master.token, "n1"))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: [n.state for n in master.cluster.nodes()] == ["alive"])
        target = await launch(app, pilot, "sleep 65")
        await execs(pilot, target, ["sleep", "65"])
        await pilot.press(key)
        await until(pilot, lambda: app.return_code is not None)  # the key itself quit
    assert app.return_code == 0
    assert psutil.Process(int(target.split(":")[1])).cmdline() == ["sleep", "65"]
    assert all(w.poll() is None for w in workers.procs)


@pytest.mark.parametrize("busy", ["listen", "api"])
async def test_a_busy_port_exits_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], busy: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"listen": "127.0.0.1:0", "api": "127.0.0.1:0", busy: f"127.0.0.1:{port}"}
        config = MasterConfig(**ports, state_dir=tmp_path)
        master = Master(config)
        app = CorralApp(master)
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.return_code is not None)
        assert app.return_code == 1
        assert "cannot listen" in capsys.readouterr().err


# --- every verb of the registry: help, route, and the : command line ----------------
async def run_line(app: CorralApp, pilot: Pilot[None], line: str) -> None:
    """``:LINE``, then Enter; wait until it ran (the command line closes on success)."""
    await pilot.press("colon")
    command = app.dashboard.query_one(CommandLine)
    await until(pilot, lambda: command.has_focus)
    command.value = line
    await pilot.press("enter")
    hint = app.dashboard.query_one("#command-hint")

    def ran() -> bool:
        """the command to run"""
        if hint.has_class("error"):
            raise AssertionError(f":{line} failed: {hint.render()}")
        return not app.dashboard.query_one("#command-bar").display

    await until(pilot, ran, timeout=15)


async def output_of(app: CorralApp, pilot: Pilot[None], line: str) -> str:
    """``:LINE`` for a verb that prints: the text it showed (then closed)."""
    await run_line(app, pilot, line)
    await until(pilot, lambda: isinstance(app.screen, CommandOutput))
    text = str(app.screen.query_one("#command-output-text", Static).render())
    await pilot.press("escape")
    await until(pilot, lambda: app.screen is app.dashboard)
    return text


def notified(app: CorralApp, start: str) -> bool:
    return any(n.message.startswith(start) for n in app._notifications)


def help_of(verb: str) -> str:
    with pytest.raises(SystemExit) as done, contextlib.redirect_stdout(io.StringIO()) as out:
        build_parser(verb).parse_args([verb, "--help"])
    assert done.value.code == 0
    return out.getvalue()


async def test_every_verb_has_help_a_route_and_works_from_the_command_line(
    running, workers: Workers, tmp_path: Path
) -> None:
    """Walks the registry: a verb without all three (or without a case here) fails."""
    app, pilot = running
    assert app.api is not None
    for verb in verbs.every():
        assert f"corral {verb.name}" in help_of(verb.name).split("Example:")[1], verb.name
        path = verb.path.replace("{id}", "1")  # /v1/jobs/{id}: a route with a part
        auth = {"authorization": f"Bearer {app.master.token}"}
        reply = await app.api.handle(Request(verb.method, path, {}, auth, b"{}"))
        assert reply.status != 405 and b"no such endpoint" not in reply.body, verb.name

    tried: set[str] = set()

    async def line(text: str) -> None:
        tried.add(text.split()[0])
        await run_line(app, pilot, text)

    async def shown(text: str) -> str:
        tried.add(text.split()[0])
        return await output_of(app, pilot, text)

    await line("launch --node n2 --app sleepy -- sleep 60")
    key = app.dashboard.procs.selected
    assert key is not None and key.startswith("n2:") and proc(app, key).app == "sleepy"
    assert notified(app, f"launched {key}")

    assert key in await shown("ps --node n2")
    assert "n1" in (nodes := await shown("nodes")) and "alive" in nodes
    usage = await shown("usage --node n2")
    assert key in usage and "CHILDREN MAX RSS" in usage

    talker = (await app.master.launch(["sh", "-c", "echo said; exec sleep 60"], ["n1"])).procs[0]
    await line(f"logs {talker.key}")
    assert app.dashboard.procs.selected == talker.key and app.dashboard.log_pane.has_focus
    await until(pilot, lambda: "said" in app.dashboard.log_pane.lines)

    await line(f"stop {key}")
    await ended(pilot, app, key, "killed by SIGINT")
    assert notified(app, f"delivered SIGINT to {key}")
    await line(f"kill {talker.key}")
    await ended(pilot, app, talker.key, "killed by SIGKILL")

    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    # No sshd behind these workers: a dry run logs in to each node's, and says it cannot.
    with pytest.raises(AssertionError, match=r"deploy hello\.sh to n1: cannot reach sshd at "):
        await line(f"deploy {script} --node n1 --dry-run")
    await pilot.press("escape")
    await until(pilot, lambda: not app.dashboard.query_one("#command-bar").display)

    await line("submit --mem 1M --name tried -- sleep 61")
    job = app.master.jobs.jobs()[-1]
    assert job.name == "tried" and notified(app, f"job {job.id} ")
    await line("jobs")
    await pilot.press("escape")
    await until(pilot, lambda: app.screen is app.dashboard)
    await line(f"job {job.id}")
    while app.screen is not app.dashboard:  # the ticket, then the jobs view under it
        await pilot.press("escape")
        await pilot.pause()
    await until(pilot, lambda: app.master.jobs.get(job.id).running == 1)
    with pytest.raises(AssertionError, match=r"fetch 0-n\d: cannot reach sshd"):
        await line(f"fetch {job.id} --to {tmp_path}")
    await pilot.press("escape")
    await until(pilot, lambda: not app.dashboard.query_one("#command-bar").display)
    await line(f"cancel {job.id}")
    assert notified(app, f"job {job.id} cancelled")
    await until(pilot, lambda: app.master.jobs.get(job.id).running == 0)

    assert (workers.base / "n2" / "apps" / "sleepy").exists()
    await line("rm sleepy --node n2 --logs")
    assert notified(app, "n2: removed")
    assert not (workers.base / "n2" / "apps" / "sleepy").exists()

    await line("token rotate")
    assert notified(app, "new enrollment token in ")
    await line("node revoke n2")
    assert notified(app, "n2: disconnected; 1 certificate revoked")
    await until(pilot, lambda: app.master.cluster.node_state("n2") == "lost")

    masters = await shown("masters")  # one master, no etcd: it leads alone
    assert "MASTER" in masters and "leader" in masters

    assert tried == set(verbs.NAMES), "a verb without a : case here"


async def test_stop_from_the_command_line_stops_the_good_target_and_names_the_bad(
    running,
) -> None:
    app, pilot = running
    key = await launch(app, pilot, "sleep 66")
    await run_line(app, pilot, f"stop {key} n1:999999")
    await ended(pilot, app, key, "killed by SIGINT")
    assert notified(app, "no such process: n1:999999")  # a warning, the good one still stopped
