"""The deploy dialog says what is missing before it is filled in, and speaks its own words.

On a real master with real workers; the last test deploys over the demo's own
sshd (`corral.demo_sshd`), started here as `corral demo` starts it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, Static

from corral import demo_sshd
from corral.master.config import SshConfig
from corral.master.control import Master, MasterConfig
from corral.tui.app import CorralApp
from corral.tui.widgets.deploy import DeployDialog
from tests.tui.conftest import HEARTBEAT, Workers, until

NODES = ("n1", "n2")


def make_app(
    tmp_path: Path,
    workers: Workers,
    notice: Callable[[], str] | None = None,
    ssh: SshConfig | None = None,
    worker_args: tuple[str, ...] = (),
) -> CorralApp:
    config = MasterConfig(
        listen="127.0.0.1:0",
        api="127.0.0.1:0",
        state_dir=tmp_path / "state",
        heartbeat=HEARTBEAT,
        ssh=ssh,
    )
    master = Master(config)

    def ready(address: str) -> None:
        workers.spawn(address, master.token, *NODES, args=worker_args)

    return CorralApp(master, on_ready=ready, deploy_notice=notice)


async def open_dialog(app: CorralApp, pilot: Pilot[None]) -> DeployDialog:
    await until(pilot, lambda: len(app.master.cluster.nodes()) == len(NODES))
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, DeployDialog))
    assert isinstance(app.screen, DeployDialog)
    return app.screen


def text_of(widget: Static) -> str:
    return str(widget.render())


async def test_without_sshd_the_dialog_says_so_before_it_is_filled_in(
    tmp_path: Path, workers: Workers
) -> None:
    app = make_app(tmp_path, workers, notice=lambda: demo_sshd.NO_SSHD)
    async with app.run_test(size=(100, 40)) as pilot:
        dialog = await open_dialog(app, pilot)
        notice = dialog.query_one("#deploy-notice", Static)
        assert notice.display and dialog.query_one("#deploy-form").display
        assert text_of(notice) == (
            "Deploy will fail: no sshd on this machine: install openssh-server "
            "(deploys copy files over SSH)"
        )
        assert (
            notice.region.height >= 1
            and notice.region.y < dialog.query_one("#deploy-file").region.y
        )


async def test_with_sshd_there_is_no_notice(tmp_path: Path, workers: Workers) -> None:
    app = make_app(tmp_path, workers, notice=lambda: "")
    async with app.run_test(size=(100, 40)) as pilot:
        dialog = await open_dialog(app, pilot)
        assert not dialog.query_one("#deploy-notice").display
        # The check is the dialog's to be given, too: it wins over the app's.
        app.pop_screen()
        nodes = app.master.cluster.nodes()
        await app.push_screen(
            DeployDialog(nodes, None, app.deployer.deploy, ssh_check=lambda: "sshd gone")
        )
        notice = app.screen.query_one("#deploy-notice", Static)
        assert notice.display and text_of(notice) == "Deploy will fail: sshd gone"


def test_the_demo_knows_when_there_is_no_sshd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(demo_sshd, "SSHD_PATHS", ("/nonexistent/sshd",))
    assert demo_sshd.find_sshd() is None and demo_sshd.missing() == demo_sshd.NO_SSHD
    with pytest.raises(demo_sshd.SshdError, match=r"^no sshd on this machine"):
        demo_sshd.start(Path("/nonexistent/dir"))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[demo_sshd.DemoSshd]:
    if demo_sshd.find_sshd() is None:
        pytest.skip("OpenSSH server not installed; .ci/run installs openssh-server")
    server = demo_sshd.start(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


async def test_host_key_errors_say_tick_trust_host_keys(
    tmp_path: Path, workers: Workers, sshd: demo_sshd.DemoSshd
) -> None:
    """An empty known_hosts: the first deploy is refused in the dialog's words; ticked, it works."""
    ssh = SshConfig(user=sshd.user, key=sshd.key, known_hosts=tmp_path / "known_hosts")
    port = ("--ssh-host", "127.0.0.1", "--ssh-port", str(sshd.port))
    app = make_app(tmp_path, workers, ssh=ssh, worker_args=port)
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    async with app.run_test(size=(120, 50)) as pilot:
        dialog = await open_dialog(app, pilot)
        dialog.query_one("#deploy-file").value = str(script)  # type: ignore[attr-defined]
        await pilot.press("ctrl+s")
        line = dialog.query_one("#deploy-line", Static)
        await until(pilot, lambda: "not deployed" in text_of(line))
        reports = [text_of(r) for r in dialog.query(".deploy-report").results(Static)]
        assert reports and all(r.endswith("; tick Trust host keys to record it") for r in reports)
        assert "--trust-host-key" not in " ".join(reports) + text_of(line)

        await pilot.click("#back")
        dialog.query_one("#deploy-trust", Checkbox).value = True
        await pilot.press("ctrl+s")
        await until(pilot, lambda: text_of(line).startswith("deployed job.sh"))
        assert dialog.result is not None
        picked = [r.node for r in dialog.result.results]
        assert len(picked) == len(reports)
        for node in picked:
            copy = workers.base / node / "apps" / "job.sh" / "bin" / "job.sh"
            assert copy.read_bytes() == script.read_bytes()


async def test_with_the_demos_ssh_config_the_dialog_deploys_to_every_node_as_it_is(
    tmp_path: Path, workers: Workers, sshd: demo_sshd.DemoSshd
) -> None:
    """The config `corral demo` writes: its key, a known_hosts that trusts its sshd."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.host_key_line + "\n")
    ssh = SshConfig(user=sshd.user, key=sshd.key, known_hosts=known_hosts)
    port = ("--ssh-host", "127.0.0.1", "--ssh-port", str(sshd.port))
    app = make_app(tmp_path, workers, ssh=ssh, worker_args=port)
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    async with app.run_test(size=(120, 50)) as pilot:
        dialog = await open_dialog(app, pilot)
        dialog.query_one("#deploy-file").value = str(script)  # type: ignore[attr-defined]
        dialog.query_one("#deploy-nodes").query_one(Checkbox).value = True  # all alive nodes
        await pilot.press("ctrl+s")
        line = dialog.query_one("#deploy-line", Static)
        await until(pilot, lambda: text_of(line).startswith("deployed job.sh"))
        assert dialog.result is not None and not dialog.result.failed
        assert sorted(r.node for r in dialog.result.results) == list(NODES)
        for node in NODES:
            copy = workers.base / node / "apps" / "job.sh" / "bin" / "job.sh"
            assert copy.read_bytes() == script.read_bytes()
        assert known_hosts.read_text() == sshd.host_key_line + "\n"  # nothing to record
