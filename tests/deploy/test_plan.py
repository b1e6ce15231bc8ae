"""Deploy planning: hashes decide what each node gets; then a real push over sshd."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.master.deploy import (
    LocalFile,
    NodePlan,
    PlanError,
    local_files,
    plan_node,
    plan_nodes,
    rel_paths,
    uploads,
)
from corral.master.deploy_report import node_report, plan_text, sent_report
from corral.master.elf import DeployPlan, resolve
from corral.transport.sftp import PushReport, SshTarget, push
from tests.deploy.build import GREET_C, hello_app, shared_lib
from tests.deploy.sshd import Sshd


def node_hashes(app_dir: Path, paths: list[str]) -> dict[str, str]:
    """What a worker answers to Hashes(app, paths): sha256 of the copies it has."""
    found = {}
    for rel in paths:
        f = app_dir / rel
        if f.is_file():
            found[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def write(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def files(tmp_path: Path) -> list[LocalFile]:
    exe = write(tmp_path / "bin" / "app", b"program", 0o755)
    lib = write(tmp_path / "lib" / "libx.so.1", b"library" * 100, 0o644)
    return local_files(DeployPlan(exe, [lib], ["libc.so.6"], is_elf=True))


def test_local_files_have_app_paths_modes_sizes_and_hashes(files: list[LocalFile]) -> None:
    exe, lib = files
    assert (exe.rel, exe.mode, exe.size) == ("bin/app", 0o755, 7)
    assert (lib.rel, lib.mode, lib.size) == ("lib/libx.so.1", 0o644, 700)
    assert exe.sha256 == hashlib.sha256(b"program").hexdigest()
    assert rel_paths(files) == ["bin/app", "lib/libx.so.1"]


def test_library_found_through_a_symlink_keeps_its_soname(tmp_path: Path) -> None:
    real = write(tmp_path / "lib" / "libx.so.1.2.3", b"real", 0o644)
    link = tmp_path / "lib" / "libx.so.1"
    link.symlink_to(real.name)
    exe = write(tmp_path / "app", b"p", 0o755)
    (_, lib) = local_files(DeployPlan(exe, [link], [], is_elf=True))
    assert (lib.rel, lib.size, lib.sha256) == (
        "lib/libx.so.1",
        4,
        hashlib.sha256(b"real").hexdigest(),
    )


def test_two_files_with_one_app_path_are_refused(tmp_path: Path) -> None:
    exe = write(tmp_path / "app", b"p", 0o755)
    a = write(tmp_path / "a" / "libx.so", b"a", 0o644)
    b = write(tmp_path / "b" / "libx.so", b"b", 0o644)
    with pytest.raises(PlanError, match=r"both be deployed as lib/libx\.so"):
        local_files(DeployPlan(exe, [a, b], [], is_elf=True))


def test_missing_and_different_files_are_sent_identical_ones_are_not(
    files: list[LocalFile],
) -> None:
    exe, lib = files
    fresh, same, stale = plan_nodes(
        files,
        {
            "fresh": {},
            "same": {exe.rel: exe.sha256, lib.rel: lib.sha256},
            "stale": {exe.rel: exe.sha256, lib.rel: "0" * 64},
        },
    )
    assert (fresh.send, fresh.unchanged, fresh.bytes_to_send) == (files, [], 707)
    assert (same.send, same.unchanged, same.bytes_to_send) == ([], files, 0)
    assert (stale.send, stale.unchanged, stale.bytes_to_send) == ([lib], [exe], 700)
    assert stale.bytes_unchanged == 7


def test_uploads_go_under_the_app_dir_with_modes(files: list[LocalFile]) -> None:
    plan = plan_node("n1", files, {})
    got = [(u.remote, u.mode) for u in uploads(plan, "/srv/corral/apps/demo/")]
    assert got == [
        ("/srv/corral/apps/demo/bin/app", 0o755),
        ("/srv/corral/apps/demo/lib/libx.so.1", 0o644),
    ]


def as_result(
    plan: NodePlan, report: PushReport | None = None, app_dir: str = ""
) -> dict[str, Any]:
    """``plan`` (and what was pushed to ``app_dir``) as a node's deploy result in JSON."""
    base = app_dir.rstrip("/") + "/"
    return {
        "node": plan.node,
        "to_send": [{"path": f.rel, "bytes": f.size} for f in plan.send],
        "unchanged": [{"path": f.rel, "bytes": f.size} for f in plan.unchanged],
        "sent": [
            {"path": s.remote.removeprefix(base), "bytes": s.bytes, "seconds": s.seconds}
            for s in (report.files if report else [])
        ],
        "bytes": report.bytes if report else 0,
        "seconds": report.seconds if report else 0.0,
        "error": "",
    }


def test_dry_run_text_lists_each_node_and_file(files: list[LocalFile]) -> None:
    exe = files[0]
    plans = [plan_node("n1", files, {}), plan_node("n2", files, {exe.rel: exe.sha256})]
    assert plan_text([as_result(p) for p in plans]).splitlines() == [
        "n1: would send 2 (707B), unchanged 0 (0B)",
        "  send       bin/app           7B",
        "  send       lib/libx.so.1   700B",
        "n2: would send 1 (700B), unchanged 1 (7B)",
        "  send       lib/libx.so.1   700B",
        "  unchanged  bin/app           7B",
    ]


def test_a_failed_node_reports_its_error_alone() -> None:
    failed = {"node": "n1", "error": "cannot reach sshd at 10.0.0.1:22: timed out"}
    assert node_report(failed, dry_run=False) == failed["error"]
    assert plan_text([failed]) == ""


def test_report_after_a_push_names_each_file_with_size_time_and_rate() -> None:
    result = {
        "node": "n1",
        "sent": [{"path": "bin/app", "bytes": 3 * 2**20, "seconds": 0.5}],
        "unchanged": [{"path": "lib/libx.so.1", "bytes": 15 * 2**10}],
        "bytes": 3 * 2**20,
        "seconds": 0.75,
    }
    assert sent_report(result).splitlines() == [
        "n1: sent 1 (3.0M) in 0.75s, unchanged 1 (15K)",
        "  sent       bin/app         3.0M   0.50s  6.0M/s",
        "  unchanged  lib/libx.so.1    15K",
    ]


def deploy(target: SshTarget, exe: Path, app_dir: Path) -> tuple[NodePlan, str]:
    """What the master's deploy verb does for one node, minus the command channel."""
    files = local_files(resolve(exe, ld_library_path=""))
    plan = plan_node("n1", files, node_hashes(app_dir, rel_paths(files)))
    report = push(target, uploads(plan, str(app_dir))) if plan.send else None
    return plan, sent_report(as_result(plan, report, str(app_dir)))


@pytest.mark.usefixtures("gcc")
def test_deploy_unchanged_then_changed_library_over_sshd(sshd: Sshd, tmp_path: Path) -> None:
    target = SshTarget(sshd.host, sshd.port, sshd.user, sshd.key, sshd.known_hosts)
    exe, lib = hello_app(tmp_path / "build")
    app_dir = tmp_path / "node" / "apps" / "hello"

    first, report = deploy(target, exe, app_dir)
    assert rel_paths(first.send) == ["bin/hello", "lib/libgreet.so"]
    assert "sent       " in report
    assert not (app_dir / "lib" / "libc.so.6").exists()
    assert (app_dir / "bin" / "hello").stat().st_mode & 0o777 == 0o755
    ran = subprocess.run([app_dir / "bin" / "hello"], capture_output=True, text=True, timeout=10)
    assert ran.stdout == "hello from libgreet\n"

    again, _ = deploy(target, exe, app_dir)
    assert (again.send, again.bytes_to_send, len(again.unchanged)) == ([], 0, 2)

    shared_lib(GREET_C.replace("hello from", "hi again from"), lib)
    changed, report = deploy(target, exe, app_dir)
    assert rel_paths(changed.send) == ["lib/libgreet.so"]
    assert rel_paths(changed.unchanged) == ["bin/hello"]
    assert "unchanged  bin/hello" in report
    ran = subprocess.run([app_dir / "bin" / "hello"], capture_output=True, text=True, timeout=10)
    assert ran.stdout == "hi again from libgreet\n"
