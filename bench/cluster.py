"""A real local cluster for benchmarks and integration tests.

The master and every worker are separate processes on 127.0.0.1 with
ports chosen by the kernel; nothing is simulated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil


def wait_until(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", every: float = 0.01
) -> Any:
    """Poll ``cond`` every ``every`` seconds until it returns something truthy; raise after
    ``timeout``.  (A condition that asks the master about 2,000 nodes costs it ms: poll slower.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class LocalCluster:
    """A master process and any number of worker processes under one directory."""

    def __init__(self, base: Path, heartbeat: float = 1.0, plain: bool = False) -> None:
        """``plain``: the channel without TLS (`bench.plainchannel`), a benchmark's reference."""
        self.base = base
        self.heartbeat = heartbeat
        self.corral = [sys.executable, "-m", "bench.plainchannel" if plain else "corral"]
        self.state = base / "master"
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.listen = ""
        self.api = ""
        self.token = ""

    # --- processes ----------------------------------------------------------
    def use_sshd(self, sshd: Any) -> None:
        """Point the master's ``[ssh]`` config at ``sshd`` (a tests.deploy.sshd server), trusted."""
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "config.toml").write_text(
            f'[ssh]\nuser = "{sshd.user}"\nkey = "{sshd.key}"\n'
        )
        shutil.copy(sshd.known_hosts, self.state / "known_hosts")

    def start_master(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        cmd = [*self.corral, "master", "--headless"]
        cmd += ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"]
        cmd += ["--state-dir", str(self.state), "--heartbeat", str(self.heartbeat)]
        log = open(self.base / "master.out", "wb")  # noqa: SIM115
        self.master = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(lambda: _read(self.state / "api"), 15, "the master's API address")
        self.listen = _read(self.state / "listen")
        self.api = _read(self.state / "api")
        self.token = _read(self.state / "token")

    def worker_root(self, name: str) -> Path:
        return self.base / "nodes" / name

    def start_worker(
        self, name: str, wait: bool = True, extra_args: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start worker ``name``; ``extra_args`` go to ``corral worker`` (``--ssh-port N``)."""
        root = self.worker_root(name)
        root.mkdir(parents=True, exist_ok=True)
        cmd = [*self.corral, "worker", "--master", self.listen]
        cmd += ["--name", name, "--root", str(root), *extra_args]
        env = dict(os.environ, CORRAL_TOKEN=self.token)
        log = open(self.base / f"{name}.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.workers[name] = proc
        if wait:
            self.wait_node(name, "alive")
        return proc

    def stop(self) -> None:
        """End every process this cluster started, and every program they launched.

        The masters go first, so that none launches anything more (a queued
        job whose turn came as the programs died, a relaunch) while the
        programs are being killed.
        """
        self.stop_masters()
        for name in list(self.workers):
            self.kill_programs(name)
        end_all(list(self.workers.values()))

    def stop_masters(self) -> None:
        end_all([self.master] if self.master is not None else [])

    def kill_programs(self, name: str) -> None:
        """SIGKILL every live program launched under ``name``'s root.

        Found by working directory (every program starts in its app's
        directory), not only by run record: the last launch's record may
        not be written yet.
        """
        root = self.worker_root(name)
        for proc in psutil.process_iter():
            if proc.pid != os.getpid() and _is_under(proc.pid, root):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)

    # --- API ----------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, timeout: float = 15) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.api}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.call("GET", "/v1/nodes")["nodes"]}

    def procs(self, node: str | None = None) -> dict[str, dict[str, Any]]:
        q = "?all=1" + (f"&node={node}" if node else "")
        return {p["key"]: p for p in self.call("GET", f"/v1/ps{q}")["procs"]}

    def proc(self, key: str) -> dict[str, Any] | None:
        return self.procs().get(key)

    def wait_node(self, name: str, state: str, timeout: float = 15) -> None:
        wait_until(
            lambda: self.nodes().get(name, {}).get("state") == state,
            timeout,
            f"node {name} to be {state}",
        )

    def wait_proc(
        self, key: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> Any:
        def check() -> Any:
            p = self.proc(key)
            return p if p is not None and pred(p) else None

        return wait_until(check, timeout, f"process {key}")

    def launch(self, node: str, argv: list[str], app: str | None = None) -> str:
        res = self.call("POST", "/v1/launch", {"argv": argv, "nodes": [node], "app": app})
        if res["errors"]:
            raise RuntimeError(str(res["errors"]))
        key: str = res["procs"][0]["key"]
        return key

    def signal(self, key: str, sig: str) -> dict[str, Any]:
        res: dict[str, Any] = self.call("POST", "/v1/signal", {"targets": [key], "signal": sig})
        return res["results"][0]


def end_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each of ``procs`` still running; SIGKILL one not gone 5 s later."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _is_under(pid: int, root: Path) -> bool:
    """True when ``pid`` runs with its working directory inside ``root`` (ours to kill)."""
    try:
        return Path(psutil.Process(pid).cwd()).is_relative_to(root.resolve())
    except (psutil.Error, OSError):
        return False
