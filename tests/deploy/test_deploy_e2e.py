"""Deploy end to end: a real master, two real workers, a real sshd, gcc-built programs.

The master reads ``config.toml`` from its state dir (the sshd fixture's user
and key; known_hosts at its default, STATE_DIR/known_hosts); the workers
advertise the fixture's port with ``--ssh-port``.  Everything goes through
the HTTP API the CLI uses, and the CLI verb module is run against it too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.cluster import LocalCluster, wait_until
from corral.__main__ import main as corral_main
from tests.deploy.build import GREET_C, HELLO_C, hello_app, program, shared_lib
from tests.deploy.sshd import Sshd
from tests.procs import gone

pytestmark = pytest.mark.timeout(120)

H = 0.5
NODES = ("n1", "n2")


class Api:
    """The cluster's API, with errors returned as ``{"status", "error"}``."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def deploy(self, **body: Any) -> dict[str, Any]:
        body.setdefault("nodes", list(NODES))
        return self.post("/v1/deploy", body)

    def rm(self, **body: Any) -> dict[str, Any]:
        return self.post("/v1/rm", body)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = self.cluster.call("POST", path, body, timeout=60)
        except urllib.error.HTTPError as e:
            return {"status": e.code, "error": json.loads(e.read())["error"]}
        return reply


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("deploy-cluster")), heartbeat=H)
    c.state.mkdir(parents=True)
    (c.state / "config.toml").write_text(f'[ssh]\nuser = "{sshd.user}"\nkey = "{sshd.key}"\n')
    shutil.copy(sshd.known_hosts, c.state / "known_hosts")
    try:
        c.start_master()
        for name in NODES:
            c.start_worker(name, extra_args=["--ssh-port", str(sshd.port)])
        yield c
    finally:
        c.stop()


@pytest.fixture
def api(cluster: LocalCluster) -> Api:
    return Api(cluster)


def app_dir(cluster: LocalCluster, node: str, app: str) -> Path:
    return cluster.worker_root(node) / "apps" / app


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def by_node(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert "results" in reply, reply
    return {r["node"]: r for r in reply["results"]}


def sent_paths(r: dict[str, Any]) -> list[str]:
    return sorted(f["path"] for f in r["sent"])


def run_to_end(cluster: LocalCluster, node: str, argv: list[str], app: str) -> tuple[dict, str]:
    """Launch, wait until it ended, and return its record and its whole log."""
    key = cluster.launch(node, argv, app=app)
    p = cluster.wait_proc(key, lambda p: p["state"] in ("exited", "killed", "unknown"))
    logs = list((app_dir(cluster, node, app) / "logs").glob("*.log"))
    text = "\n".join(log.read_text() for log in logs)
    return p, text


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".corral-tmp-" in p.name]


# --------------------------------------------------------------------------


def test_deploy_launch_redeploy_and_change_only_the_library(
    cluster: LocalCluster, api: Api, tmp_path: Path, gcc: str
) -> None:
    exe, lib = hello_app(tmp_path / "src")

    reply = api.deploy(file=str(exe), app="hello")
    assert "libc.so.6" in reply["system"]
    for node, r in by_node(reply).items():
        assert r["error"] == "", r
        assert sent_paths(r) == ["bin/hello", "lib/libgreet.so"]
        assert r["bytes"] == exe.stat().st_size + lib.stat().st_size
        d = app_dir(cluster, node, "hello")
        assert sha(d / "bin" / "hello") == sha(exe)
        assert sha(d / "lib" / "libgreet.so") == sha(lib)
        assert (d / "bin" / "hello").stat().st_mode & 0o111  # still executable
        assert sorted(p.name for p in (d / "lib").iterdir()) == ["libgreet.so"]  # no libc
        assert no_temp_files(d)

    # Launched by its bare name: found in the app's bin/, its library through lib/.
    p, log = run_to_end(cluster, "n1", ["hello"], "hello")
    assert (p["state"], p["exit_code"]) == ("exited", 0), log
    assert "hello from libgreet" in log

    again = by_node(api.deploy(file=str(exe), app="hello"))
    for r in again.values():
        assert (r["error"], r["bytes"], r["sent"]) == ("", 0, [])
        assert sorted(f["path"] for f in r["unchanged"]) == ["bin/hello", "lib/libgreet.so"]

    shared_lib(GREET_C.replace("hello from", "hello again from"), lib)
    changed = by_node(api.deploy(file=str(exe), app="hello"))
    for node, r in changed.items():
        assert r["error"] == ""
        assert sent_paths(r) == ["lib/libgreet.so"]
        assert [f["path"] for f in r["unchanged"]] == ["bin/hello"]
        assert sha(app_dir(cluster, node, "hello") / "lib" / "libgreet.so") == sha(lib)
    p, log = run_to_end(cluster, "n2", ["hello"], "hello")
    assert "hello again from libgreet" in log

    events = cluster.call("GET", "/v1/events?limit=1000")["events"]
    notes = [e["message"] for e in events if e["kind"] == "app.deployed"]
    assert "app hello deployed to n1: 1 sent" in "\n".join(notes)
    assert any(n.startswith("app hello deployed to n2: 0 sent, 2 unchanged") for n in notes)


def test_extra_lib_is_found_through_ld_library_path(
    cluster: LocalCluster, api: Api, tmp_path: Path, gcc: str
) -> None:
    """No rpath: the program finds its library only because lib/ is on LD_LIBRARY_PATH."""
    lib = shared_lib(GREET_C, tmp_path / "l" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "b" / "plain", f"-L{lib.parent}", "-lgreet")
    r = by_node(api.deploy(file=str(exe), libs=[str(lib)], nodes=["n2"]))["n2"]
    assert r["error"] == "" and sent_paths(r) == ["bin/plain", "lib/libgreet.so"]
    p, log = run_to_end(cluster, "n2", ["plain"], "plain")
    assert (p["state"], p["exit_code"]) == ("exited", 0), log
    assert "hello from libgreet" in log


def test_dry_run_plans_and_changes_nothing(
    cluster: LocalCluster, api: Api, tmp_path: Path, gcc: str
) -> None:
    exe, _ = hello_app(tmp_path / "src")
    reply = api.deploy(file=str(exe), app="dry", dry_run=True)
    for r in by_node(reply).values():
        assert r["error"] == "" and r["sent"] == [] and r["bytes"] == 0
        assert sorted(f["path"] for f in r["to_send"]) == ["bin/hello", "lib/libgreet.so"]
    assert "n1: would send 2" in reply["plan"] and "lib/libgreet.so" in reply["plan"]
    for node in NODES:
        assert not app_dir(cluster, node, "dry").exists()


def test_a_missing_library_is_named_before_anything_is_sent(
    cluster: LocalCluster, api: Api, tmp_path: Path, gcc: str
) -> None:
    exe, lib = hello_app(tmp_path / "src")
    lib.unlink()
    reply = api.deploy(file=str(exe), app="broken")
    assert reply["status"] == 400
    assert "libgreet.so" in reply["error"] and "not found" in reply["error"]
    for node in NODES:
        assert not app_dir(cluster, node, "broken").exists()


@pytest.mark.parametrize("app", ["a/b", "..", "../etc", "x" * 65, "sp ace"])
def test_bad_app_names_are_refused(
    cluster: LocalCluster, api: Api, tmp_path: Path, app: str
) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")

    def everything() -> set[Path]:
        return {p for node in NODES for p in cluster.worker_root(node).rglob("*")}

    before = everything()
    reply = api.deploy(file=str(script), app=app)
    assert reply["status"] == 400 and "invalid app name" in reply["error"], reply
    assert everything() - before == set()


def test_missing_file_and_unknown_node(api: Api, tmp_path: Path) -> None:
    reply = api.deploy(file=str(tmp_path / "nope"))
    assert reply["status"] == 404 and "no such file" in reply["error"]
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    reply = api.deploy(file=str(script), nodes=["ghost"])
    assert reply["status"] == 404 and "unknown node: ghost" in reply["error"]


def _other_host_key(tmp_path: Path) -> str:
    key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_a_changed_host_key_is_refused_and_nothing_is_sent(
    cluster: LocalCluster, api: Api, sshd: Sshd, tmp_path: Path
) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho v1\n")
    script.chmod(0o755)
    assert all(r["error"] == "" for r in api.deploy(file=str(script))["results"])
    before = {n: sha(app_dir(cluster, n, "tool.sh") / "bin" / "tool.sh") for n in NODES}

    known = cluster.state / "known_hosts"
    saved = known.read_text()
    known.write_text(f"{sshd.host_id} {_other_host_key(tmp_path)}\n")
    try:
        script.write_text("#!/bin/sh\necho v2\n")
        for trust in (False, True):  # opting in to unknown keys never accepts a changed one
            results = by_node(api.deploy(file=str(script), trust_host_key=trust))
            for node, r in results.items():
                assert "CHANGED" in r["error"] and "\n" not in r["error"], r
                assert r["sent"] == [] and r["bytes"] == 0
                d = app_dir(cluster, node, "tool.sh")
                assert sha(d / "bin" / "tool.sh") == before[node]
                assert no_temp_files(d)
        events = cluster.call("GET", "/v1/events?limit=1000")["events"]
        assert any(e["kind"] == "app.deploy_failed" and "CHANGED" in e["message"] for e in events)
    finally:
        known.write_text(saved)


def test_an_unknown_host_key_needs_the_opt_in_which_records_it(
    cluster: LocalCluster, api: Api, sshd: Sshd, tmp_path: Path
) -> None:
    script = tmp_path / "fresh.sh"
    script.write_text("#!/bin/sh\necho fresh\n")
    known = cluster.state / "known_hosts"
    saved = known.read_text()
    known.write_text("")
    try:
        refused = by_node(api.deploy(file=str(script), nodes=["n1"]))["n1"]
        assert "unknown host key" in refused["error"] and "--trust-host-key" in refused["error"]
        assert not (app_dir(cluster, "n1", "fresh.sh") / "bin" / "fresh.sh").exists()

        trusted = by_node(api.deploy(file=str(script), nodes=["n1"], trust_host_key=True))["n1"]
        assert trusted["error"] == "" and sent_paths(trusted) == ["bin/fresh.sh"]
        assert sshd.host_key_line.split()[2] in known.read_text()
    finally:
        known.write_text(saved)


def test_unreachable_sshd_fails_that_node_only(
    cluster: LocalCluster, api: Api, tmp_path: Path
) -> None:
    config = cluster.state / "config.toml"
    saved = config.read_text()
    config.write_text(saved + "port = 1\n")  # nothing listens there
    try:
        script = tmp_path / "lonely.sh"
        script.write_text("#!/bin/sh\n")
        r = by_node(api.deploy(file=str(script), nodes=["n1"]))["n1"]
        assert "cannot reach sshd" in r["error"] and ":1" in r["error"], r
    finally:
        config.write_text(saved)


def test_bad_config_is_one_line_naming_file_and_key(
    cluster: LocalCluster, api: Api, tmp_path: Path
) -> None:
    config = cluster.state / "config.toml"
    saved = config.read_text()
    config.write_text(saved + 'port = "twenty-two"\n')
    try:
        script = tmp_path / "x.sh"
        script.write_text("#!/bin/sh\n")
        reply = api.deploy(file=str(script))
        assert reply["status"] == 400
        assert str(config) in reply["error"] and "ssh.port" in reply["error"]
    finally:
        config.write_text(saved)


def test_rm_refused_while_running_then_forced(
    cluster: LocalCluster, api: Api, tmp_path: Path, gcc: str
) -> None:
    exe, _ = hello_app(tmp_path / "src")
    assert all(r["error"] == "" for r in api.deploy(file=str(exe), app="doomed")["results"])
    key = cluster.launch("n1", ["sleep", "60"], app="doomed")
    pid = int(key.split(":")[1])
    cluster.wait_proc(key, lambda p: p["state"] in ("running", "sleeping"))

    refused = by_node(api.rm(app="doomed"))
    assert "running" in refused["n1"]["error"] and key in refused["n1"]["error"]
    assert "not removed" in refused["n2"]["error"]  # nothing removed anywhere
    for node in NODES:
        assert (app_dir(cluster, node, "doomed") / "bin" / "hello").exists()
    assert psutil.pid_exists(pid)

    forced = by_node(api.rm(app="doomed", force=True))
    assert forced["n1"]["stopped"] == [pid] and forced["n1"]["error"] == ""
    wait_until(
        lambda: gone(pid),
        10,
        "the forced app's process to be gone",
    )
    assert cluster.proc(key)["state"] in ("killed", "exited")
    for node in NODES:
        d = app_dir(cluster, node, "doomed")
        assert not (d / "bin").exists() and not (d / "lib").exists()
        assert "apps/doomed/bin" in " ".join(forced[node]["removed"])
    assert list((app_dir(cluster, "n1", "doomed") / "logs").glob("*.log"))  # logs kept

    removed = by_node(api.rm(app="doomed", nodes=["n1"], logs=True))
    assert removed["n1"]["error"] == ""
    assert not app_dir(cluster, "n1", "doomed").exists()
    assert cluster.proc(key) is None  # its record went with its log
    assert api.rm(app="doomed", nodes=["n1"])["results"][0]["error"] == "no such app: doomed"


# --- the CLI verb ---------------------------------------------------------------------
def corral_deploy(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """``corral deploy ARGV`` through the real command line, in this process."""
    status = corral_main(["deploy", *argv, "--api", cluster.api, "--state-dir", str(cluster.state)])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_verb_prints_each_node_and_fails_on_any_error(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path, gcc: str
) -> None:
    exe, _ = hello_app(tmp_path / "src")
    status, out, err = corral_deploy(cluster, capsys, str(exe), "--app", "cli", "--all")
    assert (status, err) == (0, ""), err
    assert "n1: sent 2 (" in out and "n2: sent 2 (" in out
    assert "  sent       lib/libgreet.so" in out

    status, out, _ = corral_deploy(cluster, capsys, str(exe), "--app", "cli", "--all")
    assert status == 0 and "n1: sent 0 (0B)" in out and "  unchanged  bin/hello" in out

    status, out, _ = corral_deploy(
        cluster, capsys, str(exe), "--app", "c2", "--node", "n1", "--dry-run"
    )
    assert (
        status == 0
        and out.startswith("n1: would send 2 (")
        and not app_dir(cluster, "n1", "c2").exists()
    )

    status, out, _ = corral_deploy(cluster, capsys, str(exe), "--app", "cli", "--all", "--json")
    assert status == 0 and {r["node"] for r in json.loads(out)["results"]} == set(NODES)

    config = cluster.state / "config.toml"
    saved = config.read_text()
    config.write_text(saved + "port = 1\n")
    try:
        (tmp_path / "src" / "bin" / "hello").write_bytes(b"#!/bin/sh\necho changed\n")
        status, out, err = corral_deploy(cluster, capsys, str(exe), "--app", "cli", "--node", "n2")
    finally:
        config.write_text(saved)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("corral: deploy cli to n2: cannot reach sshd")


def test_cli_resolves_libraries_on_the_callers_ld_library_path(
    cluster: LocalCluster,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    gcc: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``LD_LIBRARY_PATH=./l corral deploy ./b/plain`` finds the library where ldd does."""
    lib = shared_lib(GREET_C, tmp_path / "l" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "b" / "plain", f"-L{lib.parent}", "-lgreet")  # no rpath
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    status, out, err = corral_deploy(cluster, capsys, "./b/plain", "--node", "n1", "--dry-run")
    assert status == 1 and "libgreet.so" in err and "not found" in err, err

    monkeypatch.setenv("LD_LIBRARY_PATH", "./l")  # relative to the caller, not to the master
    status, out, err = corral_deploy(cluster, capsys, "./b/plain", "--node", "n1")
    assert (status, err) == (0, ""), err
    assert "  sent       lib/libgreet.so" in out
    assert sha(app_dir(cluster, "n1", "plain") / "lib" / "libgreet.so") == sha(lib)
    p, log = run_to_end(cluster, "n1", ["plain"], "plain")
    assert (p["state"], p["exit_code"]) == ("exited", 0), log
    assert exe.exists()


def test_cli_refuses_a_file_that_is_not_a_program_unless_forced(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "hello.c"
    source.write_text("int main(void) { return 0; }\n")
    status, out, err = corral_deploy(cluster, capsys, str(source), "--node", "n1")
    assert (status, out) == (1, "")
    assert err == (
        "corral: cannot deploy hello.c: neither an ELF executable nor a script starting with #!;"
        " --force deploys it anyway\n"
    )
    assert not app_dir(cluster, "n1", "hello.c").exists()

    status, out, err = corral_deploy(cluster, capsys, str(source), "--node", "n1", "--force")
    assert (status, err) == (0, ""), err
    assert (app_dir(cluster, "n1", "hello.c") / "bin" / "hello.c").read_text() == source.read_text()
