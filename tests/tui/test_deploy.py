"""Deploy and rm from the dashboard, on a real master, real workers and a real sshd.

The master reaches the workers' sshd with the fixture's user and key
(`MasterConfig.ssh`) and an empty known_hosts, so the first deploy has to
tick "trust unknown host keys"; the workers advertise the fixture's port.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, ProgressBar, Static

from corral.master.config import SshConfig
from corral.tui.app import CorralApp
from corral.tui.widgets.deploy import DeployDialog, NodeProgress
from corral.tui.widgets.remove import RemoveDialog
from tests.deploy.build import hello_app
from tests.deploy.sshd import SSHD, Sshd, sshd_available, start_sshd
from tests.tui.conftest import Workers, dashboard, until

NODES = ("n1", "n2")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not sshd_available():
        pytest.skip(f"OpenSSH server not installed ({SSHD}); .ci/run installs openssh-server")
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        pytest.skip("gcc not installed; .ci/run installs it")
    return path


@pytest.fixture
async def running(
    tmp_path: Path, workers: Workers, sshd: Sshd
) -> AsyncIterator[tuple[CorralApp, Pilot[None]]]:
    """The dashboard over a real master and two workers whose files go over the real sshd."""
    ssh = SshConfig(user=sshd.user, key=sshd.key, known_hosts=tmp_path / "known_hosts")
    port = ["--ssh-port", str(sshd.port)]
    async with dashboard(
        workers, tmp_path / "state", NODES, worker_args=port, config={"ssh": ssh}
    ) as running:
        yield running


def app_dir(workers: Workers, node: str, app: str) -> Path:
    return workers.base / node / "apps" / app


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def type_text(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


def text_of(widget: Static) -> str:
    return str(widget.render())


async def test_deploy_dialog_sends_a_program_and_its_library_with_a_bar_per_node(
    running, workers: Workers, tmp_path: Path, gcc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, pilot = running
    exe, lib = hello_app(tmp_path / "src")
    total = exe.stat().st_size + lib.stat().st_size
    shown: list[tuple[str, int, int]] = []
    original = NodeProgress.show_progress

    def spy(self: NodeProgress, sent: int, total: int) -> None:
        shown.append((self.node, sent, total))
        original(self, sent, total)

    monkeypatch.setattr(NodeProgress, "show_progress", spy)

    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, DeployDialog))
    dialog = app.screen
    assert isinstance(dialog, DeployDialog)
    await type_text(pilot, str(exe))
    await pilot.press("tab")
    await type_text(pilot, "hello")
    await pilot.press("tab", "tab", "space")  # past the node list: "All alive nodes"
    await pilot.press("tab", "tab", "space")  # past "dry run": "trust unknown host keys"
    assert dialog.request().all_nodes and dialog.request().trust_host_key
    await pilot.press("ctrl+s")

    await until(pilot, lambda: dialog.result is not None, timeout=30)
    result = dialog.result
    assert result is not None and not result.failed, result
    assert app.screen is dialog  # the report stays until closed

    for node in NODES:
        d = app_dir(workers, node, "hello")
        assert sha(d / "bin" / "hello") == sha(exe)
        assert sha(d / "lib" / "libgreet.so") == sha(lib)
        assert (node, total, total) in shown  # the bar was fed up to the total
        row = next(r for r in dialog.query(NodeProgress) if r.node == node)
        assert row.query_one(ProgressBar).percentage == 1.0
        report = text_of(row.query_one(".deploy-report", Static))
        assert report.startswith(f"{node}: sent 2 ")
        assert "bin/hello" in report and "lib/libgreet.so" in report
    line = text_of(dialog.query_one("#deploy-line", Static))
    assert line.startswith("deployed hello: n1 sent 2")
    assert "libc.so" not in "".join(p.name for p in app_dir(workers, "n1", "hello").rglob("*"))

    await pilot.press("escape")
    await until(pilot, lambda: app.screen is app.dashboard)


async def test_deploy_errors_show_in_the_dialog_as_one_line(
    running, tmp_path: Path, workers: Workers
) -> None:
    app, pilot = running
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, DeployDialog))
    dialog = app.screen
    line = dialog.query_one("#deploy-line", Static)

    await type_text(pilot, str(tmp_path / "nowhere"))
    await pilot.press("enter")
    await until(pilot, lambda: "no such file here" in text_of(line))

    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    dialog.query_one("#deploy-file").value = str(script)  # type: ignore[attr-defined]
    await pilot.press("tab")
    await type_text(pilot, "../evil")
    await pilot.press("enter")
    await until(pilot, lambda: "invalid app name" in text_of(line))
    assert "\n" not in text_of(line)
    assert dialog.query_one("#deploy-form").display  # back at the form to fix it
    assert not (workers.base / "n1" / "apps" / "evil").exists()


async def test_the_dialog_refuses_a_file_that_is_not_a_program_unless_forced(
    running, tmp_path: Path, workers: Workers
) -> None:
    app, pilot = running
    notes = tmp_path / "notes.txt"
    notes.write_text("not a program\n")
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, DeployDialog))
    dialog = app.screen
    assert isinstance(dialog, DeployDialog)
    line = dialog.query_one("#deploy-line", Static)
    dialog.query_one("#deploy-file").value = str(notes)  # type: ignore[attr-defined]
    dialog.query_one("#deploy-trust", Checkbox).value = True
    await pilot.press("ctrl+s")
    await until(pilot, lambda: "neither an ELF executable nor a script" in text_of(line))
    assert "tick Force" in text_of(line) and dialog.query_one("#deploy-form").display

    dialog.query_one("#deploy-force", Checkbox).value = True
    await pilot.press("ctrl+s")
    await until(pilot, lambda: dialog.result is not None, timeout=30)
    assert dialog.result is not None and not dialog.result.failed
    assert (
        app_dir(workers, "n1", "notes.txt") / "bin" / "notes.txt"
    ).read_text() == "not a program\n"


async def test_colon_deploy_then_rm_with_confirmation_and_force(
    running, workers: Workers, tmp_path: Path
) -> None:
    app, pilot = running
    script = tmp_path / "napper"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)

    await pilot.press("colon")
    await type_text(pilot, f"deploy {script} --all --trust-host-key")
    await pilot.press("enter")

    def deployed() -> bool:
        """the notification of the deploy"""
        return any(n.message.startswith("deployed napper") for n in app._notifications)

    await until(pilot, deployed, timeout=30)
    for node in NODES:
        assert sha(app_dir(workers, node, "napper") / "bin" / "napper") == sha(script)

    launched = await app.master.launch(["napper"], nodes=["n2"], app="napper")
    key = launched.procs[0].key
    await until(pilot, lambda: app.dashboard.procs.select(key))

    await pilot.press("ctrl+d")
    await until(pilot, lambda: isinstance(app.screen, RemoveDialog))
    dialog = app.screen
    assert isinstance(dialog, RemoveDialog)
    named = text_of(dialog.query_one("#remove-title", Static)) + text_of(
        dialog.query_one("#confirm-targets", Static)
    )
    assert "napper" in named and "n1" in named and f"1 running: {key}" in named
    out = dialog.query_one("#remove-result", Static)

    await pilot.press("enter")  # Remove has the focus: refused, the app runs
    await until(pilot, lambda: "tick Force" in text_of(out))
    assert "--force" not in text_of(out)  # the dialog's words, not the CLI's
    assert (app_dir(workers, "n2", "napper") / "bin" / "napper").exists()

    dialog.query_one("#remove-force", Checkbox).value = True
    dialog.query_one("#remove-logs", Checkbox).value = True
    await pilot.press("ctrl+s")
    await until(pilot, lambda: dialog.results is not None and "removed" in text_of(out))
    text = text_of(out)
    assert f"(stopped {key})" in text  # as `corral rm` says it
    for node in NODES:
        assert not app_dir(workers, node, "napper").exists()
    await pilot.press("escape")
    await until(pilot, lambda: app.screen is app.dashboard)


async def test_progress_feed_coalesces_and_survives_a_foreign_context() -> None:
    """A burst of callbacks, some from a context without Textual's app, flushes once."""
    import contextvars

    from textual.app import App

    from corral.tui.widgets.deploy import ProgressFeed

    flushed: list[dict[str, tuple[int, int]]] = []
    app: App[None] = App()
    async with app.run_test() as pilot:
        feed = ProgressFeed(app.screen, flushed.append, interval=0.1)
        empty = contextvars.Context()  # as the master's transfer thread calls back
        for sent in range(0, 1001, 10):
            empty.run(feed, "n1", sent, 1000)
            feed("n2", sent // 2, 500)
        await until(pilot, lambda: flushed, timeout=5)
        await pilot.pause(0.3)
    assert flushed == [{"n1": (1000, 1000), "n2": (500, 500)}]
