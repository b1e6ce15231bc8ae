"""Heal time: how soon a node is back after a silent 30 s network cut.

A master and a worker on two hosts (network namespaces, `bench.netns`),
heartbeat H = 1 s.  The worker's cable is cut for 30 s (packets dropped
without a word), then put back.  Figure: seconds from the heal to the
master's "came back" event, then to a request answered.  Reference: a worker
started cold on the same hosts, from its start to the same event.  Goal:
back within 2H.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster import _read, wait_until
from bench.netns import Lab, available
from bench.report import line

H = 1.0
CUT = 30.0


def _events(state: Path, kind: str, node: str) -> list[float]:
    try:
        lines = (state / "events.log").read_bytes().splitlines()
    except OSError:
        return []
    out = []
    for raw in lines:
        ev = json.loads(raw)
        if ev["kind"] == kind and ev["node"] == node:
            out.append(float(ev["ts"]))
    return out


def run() -> list[str]:
    why = available()
    if why:
        return [f"[SKIP] heal after a silent cut: {why}"]
    lab = Lab(net=80)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        try:
            lab.start()
            ip = lab.add("m")
            lab.add("w1")
            corral = [sys.executable, "-m", "corral"]
            master = [*corral, "master", "--headless", "--listen", f"{ip}:0", "--api"]
            master += ["127.0.0.1:0", "--state-dir", str(state), "--heartbeat", str(H)]
            procs.append(
                subprocess.Popen(
                    lab.run_in("m", master), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            listen = wait_until(lambda: _read(state / "listen"), 20, "the master")
            token = (state / "token").read_text().strip()
            worker = [*corral, "worker", "--master", listen, "--name", "w1"]
            worker += ["--root", f"{tmp}/w1", "--token-file", str(state / "token")]
            started = time.time()
            procs.append(
                subprocess.Popen(
                    lab.run_in("w1", worker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            joined = wait_until(lambda: _events(state, "node.joined", "w1"), 20, "w1")[0]
            cold = joined - started
            lab.cut("w1")
            wait_until(lambda: _events(state, "node.lost", "w1"), 10, "w1 lost")
            time.sleep(CUT)  # the length of the partition is the experiment
            lab.heal("w1")
            healed = time.time()
            back = wait_until(lambda: _events(state, "node.back", "w1"), 30, "w1 back")[-1]
            ps = [*corral, "ps", "--node", "w1"]
            env = {"CORRAL_STATE_DIR": str(state), "CORRAL_TOKEN": token}
            subprocess.run(lab.run_in("m", ps), env=env, check=True, capture_output=True)
            answered = time.time() - healed
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(10)
            lab.close()
    heal = back - healed
    return [
        line(
            f"heal after a {CUT:g} s silent cut (H = {H:g} s)",
            f"back {heal:.2f} s after the heal, a request answered at {answered:.2f} s",
            f"a cold worker start joins in {cold:.2f} s",
            f"back within 2H = {2 * H:g} s",
            heal <= 2 * H,
        )
    ]
