"""Fixtures: a fake master, real workers, in-process supervisors; every process cleaned up."""

from __future__ import annotations

import ctypes
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from corral.daemon import states
from corral.daemon.store import AppStore
from corral.daemon.supervisor import Supervisor
from tests.daemon.harness import ILLEGAL, FakeMaster, WorkerProcess, kill_programs, reap_orphans

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(autouse=True)
def subreaper() -> Iterator[None]:
    """Be a child subreaper during each test, so orphaned shims come to us to be reaped.

    Autouse, so torn down last: after `spawn_worker` has reaped what came.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
async def master() -> AsyncIterator[FakeMaster]:
    fake = await FakeMaster().start()
    yield fake
    await fake.close()


@pytest.fixture
def spawn_worker(root: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers (``spawn_worker(port, **kw)``); all stopped and cleaned up after.

    A worker that logged an illegal process state change fails the test.
    """
    started: list[WorkerProcess] = []

    def spawn(port: int, **kw: object) -> WorkerProcess:
        kw.setdefault("root", root)
        worker = WorkerProcess(port, **kw).start()  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield spawn
    roots = {w.root for w in started}
    for r in roots:
        kill_programs(r)
    for worker in started:
        worker.stop()
    for r in roots:
        reap_orphans(r)
    for worker in started:
        assert ILLEGAL not in worker.stderr(), worker.stderr()


@pytest.fixture
def store(root: Path) -> Iterator[AppStore]:
    root.mkdir()
    s = AppStore(root)
    yield s
    s.close()


@pytest.fixture
async def supervisors(
    root: Path, store: AppStore, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[], Supervisor]]:
    """Start a `Supervisor` on ROOT in the test's loop; each call closes the last (a restart).

    Strict (an illegal state change raises); one logged fails the test.
    """
    monkeypatch.setattr(states, "STRICT", True)
    started: list[Supervisor] = []
    lines: list[str] = []

    def start() -> Supervisor:
        for old in started:
            old.close()
        sup = Supervisor(root, store, "t", log=lines.append)
        sup.start()
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()
    kill_programs(root)
    reap_orphans(root)
    assert not [line for line in lines if ILLEGAL in line], lines
