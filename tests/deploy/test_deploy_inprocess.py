"""`Deployer.deploy` called in-process (as the TUI calls it), with a real worker and sshd.

Checks what the HTTP API cannot show: the progress callback arrives on the
event loop's thread, in order, ending at the total; and the SSH settings
given in `MasterConfig` win over the state dir's config file.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.master.config import SshConfig
from corral.master.control import Master, MasterConfig, VerbError
from corral.master.deployer import Deployer
from tests.deploy.sshd import Sshd

pytestmark = pytest.mark.timeout(60)

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


async def wait_for(cond: object, what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def deployer(tmp_path: Path, sshd: Sshd) -> AsyncIterator[Deployer]:
    """A deployer over a started master (``.master``) with one real worker, p1."""
    ssh = SshConfig(user=sshd.user, key=sshd.key, known_hosts=sshd.known_hosts)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "config.toml").write_text("[ssh]\nport = 1\n")  # must not be read
    config = MasterConfig(
        listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path / "state", ssh=ssh
    )
    m = Master(config)
    await m.start()
    cmd = [sys.executable, "-m", "corral", "worker", "--master", m.listen_address]
    cmd += ["--name", "p1", "--root", str(tmp_path / "p1"), "--ssh-port", str(sshd.port)]
    worker = subprocess.Popen(
        cmd,
        env=dict(os.environ, CORRAL_TOKEN=m.token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(lambda: m.cluster.node_state("p1") == "alive", "worker p1")
        yield Deployer(m)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 10)
        await m.stop()


async def test_progress_is_called_on_the_loop_thread_up_to_the_total(
    deployer: Deployer, tmp_path: Path
) -> None:
    big = tmp_path / "blob"
    big.write_bytes(os.urandom(6 * 2**20))
    calls: list[tuple[str, int, int, int]] = []
    seen: set[str] = set()

    def progress(node: str, done: int, total: int) -> None:
        calls.append((node, done, total, threading.get_ident()))
        seen.add(CALLER.get())

    CALLER.set("the deploying task")
    result = await deployer.deploy(
        big, nodes=["p1"], progress=progress, force=True
    )  # not a program
    assert result.failed == [], result
    assert [f.path for f in result.results[0].sent] == ["bin/blob"]
    await wait_for(lambda: calls and calls[-1][1] == calls[-1][2], "the last progress call")
    assert {c[0] for c in calls} == {"p1"}
    assert {c[2] for c in calls} == {big.stat().st_size}
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)
    assert {c[3] for c in calls} == {threading.get_ident()}  # hopped onto the loop
    assert seen == {"the deploying task"}  # ... in the caller's context, not the thread's

    calls.clear()
    again = await deployer.deploy(big, nodes=["p1"], progress=progress, force=True)
    assert again.results[0].bytes == 0 and again.results[0].unchanged
    assert [c[1:3] for c in calls] == [(0, 0)]  # nothing to send: one call, total 0
    assert (tmp_path / "p1" / "apps" / "blob" / "bin" / "blob").read_bytes() == big.read_bytes()


async def test_input_errors_raise_before_any_node_is_asked(
    deployer: Deployer, tmp_path: Path
) -> None:
    with pytest.raises(VerbError, match="no node chosen"):
        await deployer.deploy(tmp_path / "x")
    with pytest.raises(VerbError, match="no such file"):
        await deployer.deploy(tmp_path / "x", nodes=["p1"])
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(VerbError, match=r"--lib .*: no such file"):
        await deployer.deploy(script, nodes=["p1"], libs=[tmp_path / "nolib.so"])
    with pytest.raises(VerbError, match="invalid app name"):
        await deployer.deploy(script, app="../up", nodes=["p1"])
    assert not (tmp_path / "p1" / "apps" / "s.sh").exists()


async def test_a_copy_that_arrived_different_is_reported_and_sent_again(
    deployer: Deployer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.master import deployer as deploying
    from corral.transport import sftp

    real_push = sftp.push

    def push_then_corrupt(target: Any, files: list[Any], progress: Any = None) -> Any:
        report = real_push(target, files, progress)
        for upload in files:  # the node is this machine: spoil what arrived
            with open(upload.remote, "ab") as f:
                f.write(b"!")
        return report

    monkeypatch.setattr(deploying.sftp, "push", push_then_corrupt)
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho tool\n")
    assert (await deployer.deploy(script, nodes=["p1"])).failed == []

    def reported() -> bool:
        return any(
            e.kind == "app.deploy_failed" and "bin/tool.sh does not match" in e.message
            for e in deployer.master.cluster.events
        )

    await wait_for(reported, "the background check to report the spoiled copy")
    monkeypatch.setattr(deploying.sftp, "push", real_push)
    again = await deployer.deploy(script, nodes=["p1"])
    assert [f.path for f in again.results[0].sent] == ["bin/tool.sh"]
    assert (tmp_path / "p1" / "apps" / "tool.sh" / "bin" / "tool.sh").read_bytes() == (
        script.read_bytes()
    )


async def test_a_new_file_is_sent_first_then_hashed_once_for_the_check(
    deployer: Deployer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node lacks it: nothing to compare, so the push starts at once and the local
    hash is taken after it (off the verb's clock), once, and cached."""
    from corral.master import deployer as deploying

    order: list[str] = []
    real_push, real_hash = deploying.sftp.push, deploying.deploy.sha256_file

    def push(target: Any, files: list[Any], progress: Any = None) -> Any:
        report = real_push(target, files, progress)
        order.append("pushed")
        return report

    def sha256_file(path: Path) -> str:
        order.append(f"hashed {path.name}")
        return real_hash(path)

    monkeypatch.setattr(deploying.sftp, "push", push)
    monkeypatch.setattr(deploying.deploy, "sha256_file", sha256_file)
    script = tmp_path / "fresh.sh"
    script.write_text("#!/bin/sh\necho fresh\n")
    assert (await deployer.deploy(script, nodes=["p1"])).failed == []
    await deployer.wait_settled("p1")
    assert order == ["pushed", "hashed fresh.sh"]
    assert not any(e.kind == "app.deploy_failed" for e in deployer.master.cluster.events)
    again = await deployer.deploy(script, nodes=["p1"])  # compared by the cached hash
    assert again.results[0].sent == [] and again.results[0].error == ""
    assert order == ["pushed", "hashed fresh.sh"]


async def test_a_file_that_is_not_a_program_is_refused_unless_forced(
    deployer: Deployer, tmp_path: Path
) -> None:
    source = tmp_path / "hello.c"
    source.write_text("int main(void) { return 0; }\n")
    source.chmod(0o755)
    with pytest.raises(VerbError) as refused:
        await deployer.deploy(source, nodes=["p1"])
    assert str(refused.value) == (
        "cannot deploy hello.c: neither an ELF executable nor a script starting with #!; "
        "--force deploys it anyway"
    )
    assert not (tmp_path / "p1" / "apps" / "hello.c").exists()

    forced = await deployer.deploy(source, nodes=["p1"], force=True)
    assert forced.failed == [] and [f.path for f in forced.results[0].sent] == ["bin/hello.c"]
    assert (tmp_path / "p1" / "apps" / "hello.c" / "bin" / "hello.c").read_bytes() == (
        source.read_bytes()
    )


@pytest.mark.usefixtures("gcc")
async def test_an_object_file_is_not_a_program_but_a_pie_is(
    deployer: Deployer, tmp_path: Path
) -> None:
    from tests.deploy.build import gcc as cc

    (tmp_path / "main.c").write_text("int main(void) { return 0; }\n")
    cc("-c", "-o", tmp_path / "main.o", tmp_path / "main.c")
    with pytest.raises(VerbError, match=r"main\.o: an ELF file that is not an executable"):
        await deployer.deploy(tmp_path / "main.o", nodes=["p1"], dry_run=True)
    cc("-pie", "-fPIE", "-o", tmp_path / "pie", tmp_path / "main.c")
    planned = await deployer.deploy(tmp_path / "pie", nodes=["p1"], dry_run=True)
    assert [f.path for f in planned.results[0].to_send] == ["bin/pie"]


@pytest.mark.usefixtures("gcc")
async def test_libraries_are_found_on_the_callers_library_path(
    deployer: Deployer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.deploy.build import GREET_C, HELLO_C, program, shared_lib

    lib = shared_lib(GREET_C, tmp_path / "l" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "b" / "plain", f"-L{lib.parent}", "-lgreet")  # no rpath
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)  # the master's own: nothing
    with pytest.raises(VerbError, match=r"libgreet\.so.*not found"):
        await deployer.deploy(exe, nodes=["p1"], dry_run=True)
    planned = await deployer.deploy(
        exe, nodes=["p1"], dry_run=True, ld_library_path=f"/nowhere:{lib.parent}"
    )
    assert planned.libraries == [str(lib)]
    assert [f.path for f in planned.results[0].to_send] == ["bin/plain", "lib/libgreet.so"]
