"""A real etcd and several real masters on it, for tests and the failover benchmark.

`Etcd` runs Debian's ``etcd`` on 127.0.0.1 with ports the kernel picked
and a data directory of its own; `HaCluster` runs masters with ``--etcd``
(they share one CA directory and token, as the masters of one cluster do)
and workers that list every master.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from bench.cluster import LocalCluster, _read, end_all, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def etcd_binary() -> str | None:
    """The etcd server's path, or None where it is not installed."""
    return shutil.which("etcd") or next(
        (p for p in ("/usr/bin/etcd", "/usr/sbin/etcd") if os.access(p, os.X_OK)), None
    )


class Etcd:
    """One etcd member on loopback; ``url`` is its client URL."""

    def __init__(self, base: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (certificate, key, CA) to serve clients over https."""
        self.base = base
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_port = free_port()
        self.peer_port = free_port()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.base.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--name", "t", "--data-dir", str(self.base / "etcd-data")]
        cmd += ["--listen-client-urls", self.url, "--advertise-client-urls", self.url]
        cmd += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        cmd += ["--initial-cluster", f"t={peer}", "--log-level", "warn"]
        if self.tls:
            cmd += ["--cert-file", str(self.tls[0]), "--key-file", str(self.tls[1])]
        log = open(self.base / "etcd.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self.healthy, timeout, "etcd to answer")

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited: see {self.base / 'etcd.out'}")
        try:
            context = ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else None
            with urllib.request.urlopen(f"{self.url}/health", timeout=1, context=context) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Master:
    """One master process of an `HaCluster`."""

    def __init__(self, name: str, state: Path, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.state = state
        self.proc = proc
        self.listen = ""
        self.api = ""


class HaCluster(LocalCluster):
    """Masters on one etcd and workers that know them all; the API calls go to ``self.api``."""

    def __init__(self, base: Path, etcd: Etcd, heartbeat: float = 0.5, lease: float = 2) -> None:
        super().__init__(base, heartbeat)
        self.etcd = etcd
        self.lease = lease
        self.masters: dict[str, Master] = {}

    def start_ha_master(self, name: str) -> Master:
        state = self.base / f"master-{name}"
        state.mkdir(parents=True, exist_ok=True)
        first = next((m for m in self.masters.values() if m.name != name), None)
        if first is not None and name not in self.masters:  # one CA and token for all
            if not (state / "tls").exists():
                (state / "tls").symlink_to(first.state / "tls")
            shutil.copy(first.state / "token", state / "token")
            (state / "token").chmod(0o600)
        for stale in ("api", "listen"):
            with contextlib.suppress(FileNotFoundError):
                (state / stale).unlink()
        # Restarted, a master takes its old port again: the workers list it.
        listen = self.masters[name].listen if name in self.masters else "127.0.0.1:0"
        cmd = [*self.corral, "master", "--headless", "--name", name]
        cmd += ["--listen", listen, "--api", "127.0.0.1:0"]
        cmd += ["--state-dir", str(state), "--heartbeat", str(self.heartbeat)]
        cmd += ["--etcd", self.etcd.url, "--lease", str(self.lease)]
        log = open(self.base / f"master-{name}.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        m = Master(name, state, proc)
        wait_until(lambda: _read(state / "api") or proc.poll() is not None, 20, f"master {name}")
        if proc.poll() is not None:
            raise RuntimeError(f"master {name} exited: {_read(self.base / f'master-{name}.out')}")
        m.listen, m.api = _read(state / "listen"), _read(state / "api")
        self.masters[name] = m
        if len(self.masters) == 1:
            self.state, self.token = state, _read(state / "token")
            self.master, self.listen, self.api = proc, m.listen, m.api
        return m

    def master_list(self) -> str:
        return ",".join(m.listen for m in self.masters.values())

    def start_worker(self, name: str, wait: bool = True, extra_args: Any = ()) -> Any:
        saved, self.listen = self.listen, self.master_list()
        try:
            return super().start_worker(name, wait, extra_args)
        finally:
            self.listen = saved

    def use(self, name: str) -> None:
        """Send the API calls to master ``name`` from now on."""
        self.api = self.masters[name].api

    def masters_view(self, via: str | None = None) -> dict[str, dict[str, Any]]:
        saved = self.api
        if via is not None:
            self.use(via)
        try:
            return {m["name"]: m for m in self.call("GET", "/v1/masters")["masters"]}
        finally:
            self.api = saved

    def leader(self) -> str | None:
        """The master that leads and acts (None: none does yet).

        Asked of every live one; etcd's word that a master leads is
        confirmed by that master itself, which may not act for a moment
        after etcd comes back (until its lease is renewed).
        """
        for name, m in self.masters.items():
            if m.proc.poll() is not None:
                continue
            with contextlib.suppress(OSError, ValueError):
                for row in self.masters_view(name).values():
                    if row["role"] == "leader":
                        return str(row["name"]) if self._acts(str(row["name"])) else None
        return None

    def _acts(self, name: str) -> bool:
        saved = self.api
        self.use(name)
        try:
            return bool(self.call("GET", "/v1/masters").get("acting"))
        finally:
            self.api = saved

    def kill_master(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.masters[name].proc
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(10)

    def stop_masters(self) -> None:
        for m in self.masters.values():
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)  # a frozen one cannot stop
        self.master = None
        end_all([m.proc for m in self.masters.values()])
