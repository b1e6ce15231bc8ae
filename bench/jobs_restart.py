"""Master restart with 10,000 jobs in its database: from the start to the API answering.

A state dir whose ``jobs.db`` holds 10,000 queued jobs (1-8 replicas,
written straight into a `TicketStore`, as a master would have stored
them; no worker, so all of them stay queued).  ``corral master
--headless`` is started as a real process; figure: from its start to
``GET /v1/jobs`` answering with all 10,000 (the interpreter's start,
the imports, the store read, the queue rebuilt, the API bound and the
reply read to its last byte; the client's JSON parse is not counted).
Reference in the same run, starts alternated: the same master with an
empty ``jobs.db``, to its first ``GET /v1/jobs`` answer.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import line, median
from corral.master.tickets import Job, Replica, TicketStore

JOBS = 10_000
STARTS = 3  # of each kind
TARGET_S = 1.0
SEED = 12


def _fill(state: Path, count: int) -> None:
    """``count`` queued jobs in ``state/jobs.db``, as `Jobs.submit` stores them."""
    state.mkdir(parents=True, exist_ok=True)
    store = TicketStore(state / "jobs.db")
    rng = random.Random(SEED)
    now = time.time()
    try:
        for i in range(count):
            n = rng.randint(1, 8)
            job = Job(
                id=0,
                name=f"sweep-{i}",
                app="sim",
                argv=["./simulate", "--steps", str(rng.randint(10, 10_000))],
                count=n,
                mem=rng.choice((256, 512, 1024, 2048)) << 20,
                spread=rng.random() < 0.1,
                outputs=["out.txt"],
                submitted_at=now - (count - i),
                replicas=[Replica(index=r) for r in range(n)],
            )
            store.add(job)
    finally:
        store.close()


def _get_jobs(api: str, token: str) -> bytes | None:
    """The body of ``GET /v1/jobs`` once read whole; None if the API does not answer yet."""
    host, port = api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
        return body if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def _start(state: Path, expect: int) -> tuple[float, float]:
    """Seconds from the master's start to its API address, and to all ``expect`` jobs listed."""
    (state / "api").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "corral", "master", "--headless"]
    cmd += ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--state-dir", str(state)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 60
        api = ""
        while not api:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the master did not start (exit {proc.returncode})")
            try:
                api = (state / "api").read_text().strip()
            except OSError:
                time.sleep(0.002)
        bound = time.perf_counter() - t0
        token = (state / "token").read_text().strip()
        while True:
            body = _get_jobs(api, token)
            if body is not None:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError("the master's API did not answer")
            time.sleep(0.002)
        answered = time.perf_counter() - t0  # the last byte read; parsing it is ours
        jobs: list[Any] = json.loads(body)["jobs"]
        if len(jobs) != expect:
            raise RuntimeError(f"the master lists {len(jobs)} jobs, not {expect}")
        return bound, answered
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run() -> list[str]:
    full: list[tuple[float, float]] = []
    empty: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        loaded, bare = Path(tmp) / "loaded", Path(tmp) / "empty"
        _fill(loaded, JOBS)
        _fill(bare, 0)
        for _ in range(STARTS):
            full.append(_start(loaded, JOBS))
            empty.append(_start(bare, 0))
    ans = median([a for _, a in full])
    bound = median([b for b, _ in full])
    ref = median([a for _, a in empty])
    return [
        line(
            f"master restart with {JOBS:,} queued jobs in jobs.db (median of {STARTS} starts)",
            f"all {JOBS:,} listed by GET /v1/jobs {ans:.2f} s after the start "
            f"(API bound at {bound:.2f} s)",
            f"the same master with an empty jobs.db answers at {ref:.2f} s",
            f"<= {TARGET_S:g} s",
            ans <= TARGET_S,
        )
    ]
