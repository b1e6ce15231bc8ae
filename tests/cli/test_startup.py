"""What a read verb loads: the standard library it needs, nothing heavy (not its time).

``corral nodes`` runs as a real process against a real master; the modules
it imported are read back from inside it (``sys.modules`` at exit, written
by an ``atexit`` hook installed through ``-c``), so the test sees exactly
what the command line pays for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import REPO, Cluster, base_env, run_corral, stop_process, wait_for

HEAVY = ("http.client", "email", "asyncio", "textual", "paramiko", "msgspec", "ssl")
AVOIDED = ("pathlib", "dataclasses", "urllib", "shutil", "socket", "encodings.idna", "ipaddress")
# argparse and json load `re`, `enum`, `functools` and `collections`: 13 and 12 ms
# of a command's start (see master.verbs.quickargs and transport.quickjson).
PARSING = ("argparse", "re", "json", "enum", "functools", "collections", "gettext", "warnings")

PROBE = """
import atexit, sys
OUT = sys.argv[1]
def dump():
    with open(OUT, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(dump)
from corral.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def modules_of(cluster: Cluster, tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        env=cluster.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, set(out.read_text().splitlines())


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_read_verb_imports_nothing_heavy(cluster: Cluster, tmp_path: Path) -> None:
    status, modules = modules_of(cluster, tmp_path, "nodes")
    assert status == 0
    assert "corral.master.verbs.nodes" in modules  # it did run the verb
    assert [m for m in HEAVY if loaded(modules, m)] == []
    assert [m for m in (*AVOIDED, *PARSING, "typing") if loaded(modules, m)] == []
    others = {m for m in modules if m.startswith("corral.master.verbs.")}
    assert others <= {f"corral.master.verbs.{m}" for m in ("base", "quickargs", "nodes")}, others


def test_stop_wait_imports_nothing_heavy_either(cluster: Cluster, tmp_path: Path) -> None:
    status, modules = modules_of(cluster, tmp_path, "stop", "--wait", "w1:999999")
    assert status == 1  # no such process: the point is what it loaded to say so
    assert [m for m in (*HEAVY, *AVOIDED, *PARSING, "typing") if loaded(modules, m)] == []


def test_a_usage_error_is_still_worded_by_argparse(cluster: Cluster, tmp_path: Path) -> None:
    status, modules = modules_of(cluster, tmp_path, "stop", "--wait")
    assert status == 2
    assert "argparse" in modules  # what the quick path cannot read, argparse does


# Deploys, bundles and fetches need these; a master's start does not (they
# were a quarter of its time to the API answering: see transport.lazy).  That
# they still load when a deploy needs them, the deploy tests show.
DEPLOY_ONLY = ("paramiko", "invoke", "elftools")


def test_a_master_starts_without_the_ssh_and_elf_libraries(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "modules.json"
    argv = [sys.executable, "-c", PROBE, str(out), "master", "--headless"]
    argv += ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--state-dir", str(state)]
    env = base_env(CORRAL_STATE_DIR=str(state))
    master = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: (state / "api").exists(), "the master's API address")
        nodes = run_corral("nodes", "--json", env=env)
        assert (nodes.status, nodes.json()) == (0, {"nodes": []})  # the API answered
    finally:
        stop_process(master)
    modules = set(out.read_text().splitlines())
    assert {"corral.master.deployer", "corral.transport.sftp"} <= modules  # deploy is ready
    assert [m for m in DEPLOY_ONLY if loaded(modules, m)] == []
