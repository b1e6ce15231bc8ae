"""A bundle's steps as the ticket, ``corral jobs`` and the dashboard word them."""

from __future__ import annotations

from corral.master.job_report import bundle_progress, steps_text, ticket_lines
from corral.tui.widgets.jobs import replica_cells, replica_headers

NOW = 1000.0


def rep(*steps: dict[str, object], **kw: object) -> dict[str, object]:
    return {"index": 0, "state": "launching", "node": "n1", "steps": list(steps), **kw}


def test_live_and_ended_steps_read_as_progress_then_times() -> None:
    sending = {"name": "sending", "started_at": NOW - 1.2, "done": 34, "total": 100}
    assert steps_text(rep(sending), NOW) == "sending 34% 1.2s"
    sent = {**sending, "ended_at": NOW - 0.4, "sent": 100 << 20, "done": 100}
    unpacking = {"name": "unpacking", "started_at": NOW - 0.4}
    assert steps_text(rep(sent, unpacking), NOW) == "sent 100M 0.8s, unpacking 0.4s"
    had = {"name": "sending", "started_at": NOW - 1, "ended_at": NOW - 0.997, "sent": 0}
    unpacked = {"name": "unpacking", "started_at": NOW - 0.99, "ended_at": NOW - 0.95}
    running = rep(had, unpacked, started_at=NOW - 0.9, state="running")
    assert steps_text(running, NOW) == "had it 3ms, unpacked 40ms, running 0.9s"
    refused = {"name": "unpacking", "started_at": NOW - 1, "ended_at": NOW - 0.9, "failed": True}
    assert steps_text(rep(had, refused), NOW) == "had it 3ms, unpacking failed 0.1s"


def test_the_jobs_row_counts_replicas_by_step_and_the_ticket_gets_a_steps_column() -> None:
    sending = {"name": "sending", "started_at": NOW - 1, "done": 1, "total": 2}
    job = {
        "id": 3, "name": "b", "state": "running", "count": 3, "mem": 1, "argv": ["make", "run"],
        "bundle": "ab" * 32, "bundle_name": "app.tar.gz", "bundle_bytes": 2048,
        "replicas": [
            rep(sending), rep(sending, index=1),
            rep({"name": "unpacking", "started_at": NOW - 0.5}, index=2),
        ],
    }  # fmt: skip
    assert bundle_progress(job, NOW) == "2 sending 50%, 1 unpacking"
    lines = ticket_lines(job, NOW)
    assert "  bundle     app.tar.gz (2.0K, sha256 abababababab)" in lines
    assert any("STEPS" in line for line in lines)
    assert "STEPS" in replica_headers(True) and "STEPS" not in replica_headers(False)
    cells = replica_cells(job["replicas"][0], NOW, steps=True)  # type: ignore[index]
    assert [c.plain for c in cells][-2] == "sending 50% 1.0s"


def test_a_send_waiting_for_its_turn_says_so_until_its_bytes_flow() -> None:
    from corral.master.bundles import WAITING_TURN

    waiting = {"name": "sending", "started_at": NOW - 0.4, "done": 0, "total": 100}
    waiting["note"] = WAITING_TURN
    flowing = {"name": "sending", "started_at": NOW - 0.4, "done": 20, "total": 100}
    assert steps_text(rep(waiting), NOW) == "waiting to send 0.4s"
    assert steps_text(rep(flowing), NOW) == "sending 20% 0.4s"
    job = {"replicas": [rep(waiting), rep(waiting, index=1), rep(flowing, index=2)]}
    assert bundle_progress(job, NOW) == "2 waiting to send, 1 sending 20%"
