"""Launch round trip: verb issued to pid reported, on loopback.

corral: `POST /v1/launch` of `sleep 600` on one worker over a kept-alive API
connection, timed from the request to the reply carrying the pid (the path
`corral launch` takes, minus Python's start-up), launches 10 ms apart.
The worker channel is mutual TLS; a second figure compares the same
round trip with TLS patched out (`bench.plainchannel`).  References in the
same run against a local sshd: `ssh HOST true` (a fresh
connection each time) and paramiko `exec_command("true")` on an
already open connection, timed to its exit status.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import tempfile
import time
from pathlib import Path

import paramiko

from bench.cluster import LocalCluster
from bench.report import line, pct

ROUNDS = 300
SSH_ROUNDS = 30
PACE = 0.01  # seconds between launches: latency, not a flood


def _corral(cluster: LocalCluster) -> list[float]:
    host, port = cluster.api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    body = json.dumps({"argv": ["sleep", "600"], "nodes": ["bench"], "app": "rt"})

    def launch() -> float:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/launch", body, headers)
        reply = json.loads(conn.getresponse().read())
        took = time.perf_counter() - t0
        assert reply["procs"][0]["pid"] > 0, reply
        time.sleep(PACE)  # one launch at a time, as an operator issues them
        return took

    try:
        for _ in range(20):  # warm the connection and the worker
            launch()
        return [launch() for _ in range(ROUNDS)]
    finally:
        conn.close()


def _ssh(sshd) -> list[float]:  # type: ignore[no-untyped-def]
    cmd = ["ssh", "-i", str(sshd.key), "-p", str(sshd.port), "-o", "BatchMode=yes"]
    cmd += ["-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    cmd += [f"{sshd.user}@{sshd.host}", "true"]
    times = []
    for _ in range(SSH_ROUNDS):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def _paramiko(sshd) -> list[float]:  # type: ignore[no-untyped-def]
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sshd.host, sshd.port, sshd.user, key_filename=str(sshd.key))
    times = []
    try:
        for _ in range(SSH_ROUNDS):
            t0 = time.perf_counter()
            _, out, _ = client.exec_command("true")
            out.channel.recv_exit_status()
            times.append(time.perf_counter() - t0)
    finally:
        client.close()
    return times


def run() -> list[str]:
    from tests.deploy.sshd import start_sshd

    with tempfile.TemporaryDirectory() as tmp:
        corral: list[float] = []
        plain_run: list[float] = []
        for plain in (False, True):  # with TLS, then the reference without (bench.plainchannel)
            cluster = LocalCluster(Path(tmp) / ("plain" if plain else "tls"), 1.0, plain=plain)
            cluster.base.mkdir()
            cluster.start_master()
            try:
                cluster.start_worker("bench")
                times = _corral(cluster)
            finally:
                cluster.stop()
            if plain:
                plain_run = times
            else:
                corral = times
        with start_sshd(Path(tmp) / "sshd") as sshd:
            ssh = _ssh(sshd)
            warm = _paramiko(sshd)
    ms = 1000
    p50, p99 = pct(corral, 50) * ms, pct(corral, 99) * ms
    warm50, ssh50 = pct(warm, 50) * ms, pct(ssh, 50) * ms
    plain50 = pct(plain_run, 50) * ms
    return [
        line(
            f"launch round trip ({ROUNDS} launches of `sleep`, 10 ms apart)",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({warm50 / p50:.0f}x faster than warm paramiko)",
            f"paramiko exec on an open connection p50 {warm50:.1f} ms; ssh true p50 {ssh50:.1f} ms",
            "p50 <= 3 ms and >= 50x faster than warm paramiko",
            p50 <= 3 and warm50 / p50 >= 50,
        ),
        line(
            "launch round trip: what TLS on the worker channel costs",
            f"p50 {p50:.2f} ms with TLS ({p50 - plain50:+.2f} ms)",
            f"the same without TLS p50 {plain50:.2f} ms, p99 {pct(plain_run, 99) * ms:.2f} ms",
            "TLS adds <= 0.3 ms to p50",
            p50 - plain50 <= 0.3,
        ),
    ]
