"""Pilot test of ``f`` in the jobs view: a job's files fetched over a real sshd, with progress.

Two real workers advertise a private sshd; the job's replicas write
``out.txt`` in their working directories; the dialog fetches them into the
directory typed in, one bar per node, and what arrives matches, byte for
byte, what is on the workers' disks.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from corral.master.config import SshConfig
from corral.tui.app import CorralApp
from corral.tui.widgets.deploy import NodeProgress
from corral.tui.widgets.fetch import FetchDialog
from corral.tui.widgets.jobs import JobsScreen
from tests.deploy.sshd import SSHD, Sshd, sshd_available, start_sshd
from tests.tui.conftest import Workers, dashboard, until

pytestmark = pytest.mark.timeout(120)

NODES = ("n1", "n2")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not sshd_available():
        pytest.skip(f"OpenSSH server not installed ({SSHD}); .ci/run installs openssh-server")
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
async def running(
    tmp_path: Path, workers: Workers, sshd: Sshd
) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    known = tmp_path / "known_hosts"
    shutil.copy(sshd.known_hosts, known)
    ssh = SshConfig(user=sshd.user, key=sshd.key, known_hosts=known)
    args = ("--ssh-port", str(sshd.port), "--mem", "250M")
    async with dashboard(
        workers, tmp_path / "state", NODES, worker_args=args, config={"ssh": ssh}
    ) as running:
        yield running


async def test_fetch_dialog_brings_the_outputs_home_with_a_bar_per_node(
    running, workers: Workers, tmp_path: Path
) -> None:
    app, pilot = running
    script = "head -c 200000 /dev/urandom > out.txt; touch done; sleep 60"
    job = await app.master.jobs.submit(
        ["sh", "-c", script], count=2, mem=10 * MiB, spread=True, app="fx", outputs=["out.txt"]
    )

    def workdir(index: int) -> Path:
        node = job.replicas[index].node
        return workers.base / node / "apps" / "fx" / "jobs" / str(job.id) / str(index)

    def written() -> bool:
        """both replicas wrote out.txt"""
        return all(r.launch for r in job.replicas) and all(
            (workdir(i) / "done").exists() for i in range(2)
        )

    await until(pilot, written)
    await pilot.press("j")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    await pilot.press("f")
    await until(pilot, lambda: isinstance(app.screen, FetchDialog))
    dialog = app.screen
    to = tmp_path / "results"
    dialog.query_one("#fetch-to", Input).value = str(to)
    await pilot.press("enter")
    line = dialog.query_one("#fetch-line", Static)
    await until(pilot, lambda: str(line.render()).startswith(f"job {job.id} fetched: 4 files"))
    assert {row.node for row in dialog.query(NodeProgress)} == set(NODES)
    for rep in job.replicas:
        here = to / str(job.id) / f"{rep.index}-{rep.node}"
        assert (here / "out.txt").read_bytes() == (workdir(rep.index) / "out.txt").read_bytes()
        assert (here / f"{rep.launch}.log").exists()
    result = str(dialog.query_one("#fetch-result", Static).render())
    assert f"0-{job.replicas[0].node}: 2 files" in result
    await pilot.press("escape")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))

    # Into a file: one line, nothing fetched.
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    await pilot.press("f")
    await until(pilot, lambda: isinstance(app.screen, FetchDialog))
    dialog = app.screen
    assert dialog.query_one("#fetch-to", Input).value == str(to)  # remembered
    dialog.query_one("#fetch-to", Input).value = str(blocker)
    await pilot.press("enter")
    line = dialog.query_one("#fetch-line", Static)
    await until(pilot, lambda: "it is a file, not a directory" in str(line.render()))


async def test_submit_dialog_sends_a_bundle_and_runs_its_script_in_each_replica(
    running, workers: Workers, tmp_path: Path
) -> None:
    from corral.tui.widgets.submit import SubmitDialog

    app, pilot = running
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "data.txt").write_text("from the bundle\n")
    run = bundle / "run.sh"
    run.write_text("#!/bin/sh\ncat data.txt > out.txt\nsleep 60\n")
    run.chmod(0o755)
    await pilot.press("j")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    await pilot.press("n")
    await until(pilot, lambda: isinstance(app.screen, SubmitDialog))
    dialog = app.screen
    line = dialog.query_one("#submit-line", Static)
    dialog.query_one("#submit-command", Input).value = "./run.sh"
    dialog.query_one("#submit-replicas", Input).value = "2"
    dialog.query_one("#submit-mem", Input).value = "10M"
    dialog.query_one("#submit-app", Input).value = "bx"

    # A bundle that is not there: one line, nothing submitted.
    dialog.query_one("#submit-bundle", Input).value = str(tmp_path / "missing.tgz")
    await pilot.press("ctrl+s")
    await until(pilot, lambda: "missing.tgz" in str(line.render()))
    assert "\n" not in str(line.render()) and app.master.jobs.jobs() == []

    dialog.query_one("#submit-bundle", Input).value = str(bundle)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: isinstance(app.screen, JobsScreen), timeout=30)
    (job,) = app.master.jobs.jobs()
    assert job.bundle and job.bundle_name == "bundle"

    def workdir(index: int) -> Path:
        node = job.replicas[index].node
        return workers.base / node / "apps" / "bx" / "jobs" / str(job.id) / str(index)

    def ran() -> bool:
        """both replicas ran the bundle's script in their own directory"""
        return all(r.node for r in job.replicas) and all(
            (workdir(i) / "out.txt").is_file() and (workdir(i) / "out.txt").stat().st_size
            for i in range(2)
        )

    await until(pilot, ran, timeout=30)
    for i in range(2):
        assert (workdir(i) / "out.txt").read_text() == "from the bundle\n"
