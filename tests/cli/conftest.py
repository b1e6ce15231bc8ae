"""Real processes for the CLI tests: a headless master, workers, the `corral` command.

Nothing here sleeps and hopes: every wait polls a condition with a deadline.
Teardown kills what the tests launched (from the workers' run records),
then the workers, then the master.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid``, None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def pid_gone(pid: int) -> bool:
    """No such process, or a zombie (it ran to its end; reaping is its parent's job)."""
    return proc_state(pid) in (None, "Z", "X")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corral_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "corral", *args]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(extra)
    return env


@dataclass
class Result:
    status: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def json(self) -> Any:
        return json.loads(self.out)


def run_corral(*args: str, env: dict[str, str], timeout: float = 30.0) -> Result:
    """``python -m corral ARGS`` as a real process."""
    done = subprocess.run(
        corral_argv(*args),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 5.0
) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_launched(roots: list[Path]) -> None:
    """SIGKILL every program still running from the workers' run records."""
    pids = []
    for root in roots:
        for path in (root / "run").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                rec = json.loads(path.read_bytes())
                pid = rec.get("pid")
                if isinstance(pid, int) and not pid_gone(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                    pids.append(pid)
    wait_for(lambda: all(pid_gone(p) for p in pids), "launched programs to die", 10)


@dataclass
class Cluster:
    """A running master (and its workers) in ``tmp``."""

    tmp: Path
    master: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: str = ""
    listen: str = ""
    heartbeat: float = 0.5

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: only the state dir (api and token are read from it)."""
        return base_env(CORRAL_STATE_DIR=str(self.state))

    def corral(self, *args: str, **kw: Any) -> Result:
        return run_corral(*args, env=kw.pop("env", self.env), **kw)

    def start_master(self, api: str = "127.0.0.1:0") -> None:
        (self.state / "api").unlink(missing_ok=True)
        (self.state / "listen").unlink(missing_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        with open(self.tmp / "master.log", "ab") as log:
            self.master = subprocess.Popen(
                corral_argv(
                    "master",
                    "--headless",
                    "--listen",
                    self.listen or "127.0.0.1:0",
                    "--api",
                    api,
                    "--state-dir",
                    str(self.state),
                    "--heartbeat",
                    str(self.heartbeat),
                ),
                env=base_env(),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def addresses() -> bool:
            assert self.master is not None
            if self.master.poll() is not None:
                raise AssertionError(f"master exited: {(self.tmp / 'master.log').read_text()}")
            try:
                self.api = (self.state / "api").read_text().strip()
                self.listen = (self.state / "listen").read_text().strip()
            except OSError:
                return False
            return bool(self.api and self.listen)

        wait_for(addresses, "the master to write its addresses")

    def start_worker(self, name: str, *args: str) -> None:
        token = (self.state / "token").read_text().strip()
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.workers[name] = subprocess.Popen(
                corral_argv(
                    "worker",
                    "--master",
                    self.listen,
                    "--name",
                    name,
                    "--root",
                    str(self.tmp / name),
                    *args,
                ),
                env=base_env(CORRAL_TOKEN=token),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_alive(self, *names: str) -> None:
        def alive() -> bool:
            r = self.corral("nodes", "--json")
            if r.status != 0:
                return False
            states = {n["name"]: n["state"] for n in r.json()["nodes"]}
            return all(states.get(n) == "alive" for n in names)

        wait_for(alive, f"nodes {', '.join(names)} to be alive", 20)

    def close(self) -> None:
        kill_launched([self.tmp / n for n in self.workers])
        for proc in self.workers.values():
            stop_process(proc)
        if self.master is not None:
            stop_process(self.master)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master with two workers, w1 and w2, shared by a module's tests."""
    c = Cluster(tmp_path_factory.mktemp("cli"))
    try:
        c.start_master()
        for name in ("w1", "w2"):
            c.start_worker(name)
        c.wait_alive("w1", "w2")
        yield c
    finally:
        c.close()


@pytest.fixture
def lone_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A master of its own (with one worker, w1) for tests that break things."""
    c = Cluster(tmp_path)
    try:
        c.start_master()
        c.start_worker("w1")
        c.wait_alive("w1")
        yield c
    finally:
        c.close()
