"""Pilot tests of the jobs view: real workers offering 250M each, real programs.

The jobs view follows `Jobs.subscribe` (queue positions and reasons), the
submit dialog previews the placement before it commits and then starts
real replicas, ``c`` cancels a running job (its processes really end, by
SIGINT), a ticket lists its replicas as NODE:PID and opens one's log, and
the nodes pane shows memory held by jobs of what each node offers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from corral.master.tickets import Job
from corral.tui.app import CorralApp
from corral.tui.widgets.command_line import CommandLine
from corral.tui.widgets.jobs import CancelDialog, JobsScreen, JobsTable, TicketScreen
from corral.tui.widgets.nodes import NodesTable
from corral.tui.widgets.submit import SubmitDialog
from tests.procs import gone, runs
from tests.tui.conftest import Workers, dashboard, until

NODES = ("n1", "n2")
MiB = 1024 * 1024


@pytest.fixture
async def running(tmp_path: Path, workers: Workers) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard over a real master; two real workers offering 250M each to jobs."""
    async with dashboard(
        workers, tmp_path / "state", NODES, worker_args=("--mem", "250M")
    ) as running:
        yield running


async def type_text(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


def cell(app: CorralApp, job: int, column: str) -> str:
    table = app.screen.query_one(JobsTable)
    return table.get_cell(str(job), column).plain  # type: ignore[union-attr]


def replicas_running(app: CorralApp, job: Job) -> bool:
    """every replica's process alive on its worker"""
    views = [app.master.cluster.proc(r.target) for r in job.replicas if r.target]
    return len(views) == job.count and all(v is not None and v.alive for v in views)


def notified(app: CorralApp, text: str) -> bool:
    return any(text in n.message for n in app._notifications)


async def open_jobs(app: CorralApp, pilot: Pilot[None]) -> JobsTable:
    await pilot.press("j")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    return app.screen.query_one(JobsTable)


async def test_jobs_view_shows_states_positions_and_reasons_live(running) -> None:
    app, pilot = running
    jobs = app.master.jobs
    table = await open_jobs(app, pilot)
    assert table.row_count == 0
    big = await jobs.submit(["sleep", "60"], count=4, mem=100 * MiB, name="big")
    short = await jobs.submit(["sleep", "60"], count=2, mem=100 * MiB, name="short")
    tiny = await jobs.submit(["sleep", "60"], count=1, mem=10 * MiB, name="tiny")

    def shown() -> bool:
        """the three jobs in the view, the first with its 4 replicas running"""
        rows = {str(j.id) for j in (big, short, tiny)}
        return rows <= set(table.rows) and cell(app, big.id, "replicas") == "4/4"

    await until(pilot, shown)
    assert replicas_running(app, big)
    assert cell(app, big.id, "state") == "running"
    assert cell(app, short.id, "state") == "queued"
    assert cell(app, short.id, "pos") == "1"
    assert cell(app, short.id, "reason").startswith("needs 2 x 100M")
    assert "n1 50M free of 250M" in cell(app, short.id, "reason")
    assert cell(app, tiny.id, "state") == "queued"
    assert cell(app, tiny.id, "pos") == "2"
    assert cell(app, tiny.id, "reason") == f"behind job {short.id}"
    subtitle = str(app.screen.query_one("#jobs-pane").border_subtitle)
    assert subtitle.startswith("2 queued, 1 running")

    # Cancelling the first starts both in order; the view follows without a key pressed.
    await jobs.cancel([big.id])

    def started() -> bool:
        """the queued jobs running, the first cancelled"""
        return (
            cell(app, short.id, "state") == "running"
            and cell(app, tiny.id, "state") == "running"
            and cell(app, big.id, "state") == "cancelled"
        )

    await until(pilot, started)
    assert cell(app, short.id, "pos") == "-"
    await pilot.press("escape")
    assert app.screen is app.dashboard


async def test_submit_dialog_previews_then_starts_real_replicas(running) -> None:
    app, pilot = running
    await open_jobs(app, pilot)
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, SubmitDialog))
    dialog = app.screen
    preview = dialog.query_one("#submit-preview", Static)
    await type_text(pilot, "MODE=trio sleep 60")  # a variable first, as in a shell
    dialog.query_one("#submit-replicas", Input).value = "3"
    dialog.query_one("#submit-mem", Input).value = "10Q"
    await until(pilot, lambda: "memory: bad size '10Q'" in str(preview.render()))
    dialog.query_one("#submit-mem", Input).value = "100M"

    def placed() -> bool:
        """the preview names the nodes the 3 replicas would go to"""
        return str(preview.render()).startswith("Would place 3 x 100M now on n")

    await until(pilot, placed)
    assert app.master.jobs.jobs() == []  # a preview commits nothing
    nodes = str(preview.render()).rpartition(" on ")[2].split(", ")
    assert sorted(nodes) in (["n1", "n1", "n2"], ["n1", "n2", "n2"])

    # Bad input: one line in the dialog, nothing submitted.
    dialog.query_one("#submit-outputs", Input).value = "../x"
    await pilot.press("ctrl+s")
    line = dialog.query_one("#submit-line", Static)
    await until(pilot, lambda: "'..' would leave" in str(line.render()))
    assert "\n" not in str(line.render())
    assert app.master.jobs.jobs() == []

    dialog.query_one("#submit-outputs", Input).value = "out.txt"
    dialog.query_one("#submit-name", Input).value = "trio"
    await pilot.press("ctrl+s")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    (job,) = app.master.jobs.jobs()
    assert (job.name, job.count, job.mem, job.argv, job.outputs) == (
        "trio",
        3,
        100 * MiB,
        ["sleep", "60"],
        ["out.txt"],
    )
    await until(pilot, lambda: replicas_running(app, job))
    assert sorted(r.node for r in job.replicas) == sorted(nodes)  # where the preview said
    assert job.env == {"MODE": "trio"}
    for r in job.replicas:  # each replica runs with it, beside its own index
        await until(pilot, lambda pid=r.pid: runs(pid, ["sleep", "60"]))  # the reply came first
        env = psutil.Process(r.pid).environ()
        assert env["MODE"] == "trio" and env["CORRAL_JOB"] == str(job.id), env
    assert notified(app, f"job {job.id} running on n")
    table = app.screen.query_one(JobsTable)
    await until(pilot, lambda: cell(app, job.id, "replicas") == "3/3")
    assert table.selected == str(job.id)


async def test_cancel_after_confirmation_ends_the_replicas_by_sigint(running) -> None:
    app, pilot = running
    jobs = app.master.jobs
    job = await jobs.submit(["sleep", "60"], count=2, mem=100 * MiB, spread=True, name="doomed")
    table = await open_jobs(app, pilot)
    await until(pilot, lambda: replicas_running(app, job))
    pids = [r.pid for r in job.replicas]
    assert table.selected == str(job.id)

    await pilot.press("c")
    await until(pilot, lambda: isinstance(app.screen, CancelDialog))
    await pilot.press("n")  # no: nothing happens
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    assert job.state == "running" and not job.cancelled

    await pilot.press("c")
    await until(pilot, lambda: isinstance(app.screen, CancelDialog))
    await pilot.press("y")

    def ended() -> bool:
        """both replicas killed by SIGINT, the job cancelled in the view"""
        views = [app.master.cluster.proc(r.target) for r in job.replicas]
        return (
            all(v is not None and v.state == "killed" and v.signal == "SIGINT" for v in views)
            and cell(app, job.id, "state") == "cancelled"
        )

    await until(pilot, ended)
    assert all(gone(pid) for pid in pids)
    assert notified(app, f"job {job.id} cancelled: SIGINT sent to")

    # An ended job cannot be cancelled: said, and nothing asked.
    await until(pilot, lambda: job.ended)
    await pilot.press("c")
    await pilot.pause()
    assert isinstance(app.screen, JobsScreen)
    assert notified(app, f"job {job.id} has already ended (cancelled): it cannot be cancelled")

    # a hides the ended jobs, and shows them again.
    await pilot.press("a")
    assert str(job.id) not in table.rows
    await pilot.press("a")
    assert str(job.id) in table.rows


async def test_ticket_lists_replicas_by_node_pid_and_opens_a_log(running) -> None:
    app, pilot = running
    job = await app.master.jobs.submit(
        ["sh", "-c", "echo hello from $PWD; sleep 60"], count=2, mem=10 * MiB, name="pair"
    )
    await open_jobs(app, pilot)
    await until(pilot, lambda: replicas_running(app, job))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, TicketScreen))
    table = app.screen.query_one(DataTable)

    def listed() -> bool:
        """each replica's NODE:PID in the ticket"""
        procs = [str(table.get_cell(str(r.index), "PROC")) for r in job.replicas]
        return table.row_count == 2 and procs == [r.target for r in job.replicas]

    await until(pilot, listed)
    facts = str(app.screen.query_one("#ticket-facts", Static).render())
    assert facts.startswith(f"job {job.id} (pair): running, 2/2 replicas running")
    assert "memory     2 x 10M" in facts

    await pilot.press("down", "l")
    target = job.replicas[1].target
    log = app.dashboard.log_pane
    await until(pilot, lambda: app.screen is app.dashboard and log.key == target)
    assert app.dashboard.procs.selected == target
    await until(pilot, lambda: "hello from" in "\n".join(log.lines))


async def test_nodes_pane_shows_memory_held_of_offered(running) -> None:
    app, pilot = running
    nodes = app.dashboard.query_one(NodesTable)

    def shown(held: dict[str, str]) -> bool:
        return all(nodes.get_cell(n, "jobs").plain == f"{h}/250M" for n, h in held.items())  # type: ignore[union-attr]

    assert shown({"n1": "0B", "n2": "0B"})
    job = await app.master.jobs.submit(["sleep", "60"], count=3, mem=100 * MiB)
    await until(pilot, lambda: replicas_running(app, job))
    per_node = {n: sum(100 for r in job.replicas if r.node == n) for n in NODES}
    held = {n: f"{mb}M" if mb else "0B" for n, mb in per_node.items()}
    await until(pilot, lambda: shown(held))
    assert sorted(per_node.values()) == [100, 200]
    await app.master.jobs.cancel([job.id])
    await until(pilot, lambda: shown({"n1": "0B", "n2": "0B"}))


async def test_q_on_a_ticket_and_the_jobs_view_goes_back_and_quits_nothing(running) -> None:
    app, pilot = running
    job = await app.master.jobs.submit(["sleep", "60"], count=1, mem=10 * MiB, name="q")
    await open_jobs(app, pilot)
    await until(pilot, lambda: cell(app, job.id, "state") == "running")
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, TicketScreen))
    await pilot.press("q")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    await pilot.press("q")
    await until(pilot, lambda: app.screen is app.dashboard)
    assert app.is_running and replicas_running(app, job)  # the dashboard and the job go on


async def test_command_line_jobs_and_job_open_the_view_and_the_ticket(running) -> None:
    app, pilot = running
    job = await app.master.jobs.submit(["sleep", "60"], count=1, mem=10 * MiB, name="solo")
    await pilot.press("colon")
    app.dashboard.query_one(CommandLine).value = "jobs"
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    await pilot.press("escape")
    await pilot.press("colon")
    app.dashboard.query_one(CommandLine).value = f"job {job.id}"
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, TicketScreen))
    assert app.screen.job_id == job.id  # type: ignore[attr-defined]
    await pilot.press("escape", "escape")
    await until(pilot, lambda: app.screen is app.dashboard)
    await pilot.press("colon")
    app.dashboard.query_one(CommandLine).value = "submit --mem 10M --name viacmd -- sleep 60"
    await pilot.press("enter")
    await until(pilot, lambda: len(app.master.jobs.jobs()) == 2)
    second = app.master.jobs.jobs()[1]
    assert second.name == "viacmd"
    await until(pilot, lambda: notified(app, f"job {second.id} running on n"))
    assert not any(n.severity == "warning" for n in app._notifications)
    await pilot.press("colon")
    app.dashboard.query_one(CommandLine).value = "job 999"
    await pilot.press("enter")
    hint = app.dashboard.query_one("#command-hint", Static)
    await until(pilot, lambda: str(hint.render()) == "no such job: 999")
