"""A deterministic cluster for snapshots: fixed names, pids, times, and a fixed clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corral.master.control import Master, MasterConfig
from corral.transport.messages import Metrics, NodeFacts, ProcInfo

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: "now" for every snapshot
GiB = 1024**3
MiB = 1024**2


def clock() -> float:
    return T0


def _proc(pid: int, app: str, argv: list[str], started: float, **kw: object) -> ProcInfo:
    fields: dict[str, object] = {
        "state": "running",
        "cpu_user": 1.5,
        "cpu_sys": 0.25,
        "rss": 12 * MiB,
        "max_rss": 14 * MiB,
    }
    fields.update(kw)
    return ProcInfo(launch=f"L{pid}", pid=pid, app=app, argv=argv, started_at=started, **fields)  # type: ignore[arg-type]


NODES = {
    "alpha": (
        "127.0.0.1:41001",
        [
            _proc(4242, "sleep", ["sleep", "60"], T0 - 42),
            _proc(
                4243, "web", ["python3", "-m", "http.server", "8000"], T0 - 3725, state="sleeping"
            ),
            _proc(
                4100,
                "build",
                ["make", "-j8", "all"],
                T0 - 900,
                state="exited",
                exit_code=0,
                ended_at=T0 - 600,
                rss=0,
                max_rss=310 * MiB,
                cpu_user=250.0,
                cpu_sys=30.5,
            ),
        ],
    ),
    "bravo": (
        "127.0.0.1:41002",
        [
            _proc(
                5150,
                "stubborn",
                ["sh", "-c", "trap '' INT; sleep 600"],
                T0 - 120,
                state="killed",
                signal="SIGKILL",
                ended_at=T0 - 60,
                rss=0,
            ),
            _proc(
                5151,
                "sim",
                ["./simulate", "--steps", "100000"],
                T0 - 7300,
                cpu_user=7000.0,
                rss=1536 * MiB,
                max_rss=1700 * MiB,
            ),
            _proc(
                5152,
                "crashy",
                ["./crashy", "--fast"],
                T0 - 30,
                state="killed",
                signal="SIGSEGV",
                core_dumped=True,
                ended_at=T0 - 29,
                rss=0,
            ),
        ],
    ),
    "charlie": ("127.0.0.1:41003", [_proc(6001, "sleep", ["sleep", "600"], T0 - 300)]),
}


def build_master(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Master:
    """Three nodes (charlie lost), seven processes; beats stamped at fixed times."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    master = Master(MasterConfig(listen="127.0.0.1:0", api="127.0.0.1:0", state_dir=tmp_path))
    cluster = master.cluster
    with monkeypatch.context() as m:
        for i, (name, (address, procs)) in enumerate(NODES.items()):
            m.setattr(time, "time", lambda: T0 - 12.0)
            facts = NodeFacts(
                name=name,
                hostname=f"{name}.lab",
                cpus=8,
                mem_total=16 * GiB,
                boot_id="b",
                kernel="6.1.0-13-amd64",
            )
            cluster.register(facts, address, procs=procs)
            for beat in range(60):
                cpu = (beat * (7 + 5 * i)) % 100 if name != "charlie" else 20.0
                metrics = Metrics(
                    cpu_percent=float(cpu), mem_used=(3 + 2 * i) * GiB, mem_total=16 * GiB
                )
                if name != "charlie":
                    m.setattr(time, "time", lambda: T0 - 0.4)
                cluster.beat(name, metrics)
    cluster.set_node_state("charlie", "lost", "charlie lost: no heartbeat for 12.0s")
    return master
