"""Jobs as people read them: the ``jobs`` table and a job's ticket.

One wording for the command line (``corral jobs``, ``corral job ID``) and
the dashboard.  Works on the JSON shape of a ticket (`master.jobs.Jobs.ticket`),
so the command line needs nothing of the master: standard library only.
"""

from __future__ import annotations

import time

from corral.master.text import cpu_seconds, duration, human_bytes, render

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    Ticket = Mapping[str, Any]  # a type alias, for mypy only

JOB_HEADERS = ("ID", "NAME", "STATE", "REPLICAS", "MEM", "POS", "AGE", "REASON")
REPLICA_HEADERS = ("#", "PROC", "STATE", "CPU", "MAX RSS", "TIME", "REASON")
ALIVE = ("running", "sleeping", "stopped", "zombie")


def replicas_text(job: Ticket) -> str:
    """``3/4``: replicas running of those asked for."""
    return f"{job.get('running', 0)}/{job.get('count', 0)}"


def memory_text(job: Ticket) -> str:
    """``4 x 100M`` (``, spread`` when one a node)."""
    spread = ", spread" if job.get("spread") else ""
    return f"{job.get('count', 0)} x {human_bytes(job.get('mem'))}{spread}"


def age(job: Ticket, now: float) -> str:
    return duration(now - float(job.get("submitted_at") or now))


def bundle_progress(job: Ticket, now: float) -> str:
    """Replicas still sending or unpacking the bundle: ``2 sending 34%, 1 unpacking``."""
    counts: dict[str, int] = {}
    for r in job.get("replicas") or []:
        steps = r.get("steps") or []
        if steps and steps[-1].get("ended_at") is None and not steps[-1].get("failed"):
            word = step_text(steps[-1], now).rsplit(" ", 1)[0]  # without its time
            counts[word] = counts.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in counts.items())


def job_row(job: Ticket, now: float) -> tuple[object, ...]:
    pos = job.get("position") or 0
    return (
        job.get("id", "?"),
        job.get("name", ""),
        job.get("state", "?"),
        replicas_text(job),
        memory_text(job),
        pos if pos else "-",
        age(job, now),
        job.get("reason") or bundle_progress(job, now),
    )


def jobs_table(jobs: Sequence[Ticket], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [job_row(j, now) for j in jobs]
    return render(JOB_HEADERS, rows, right=("ID", "REPLICAS", "POS", "AGE"))


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{stamp} ({duration(now - t)} ago)"


def replica_state(r: Ticket) -> str:
    return str(r.get("state") or "?")


def replica_time(r: Ticket, now: float) -> str:
    start = r.get("started_at")
    if start is None:
        return "-"
    end = r.get("ended_at") or now
    return duration(float(end) - float(start))


def replica_row(r: Ticket, now: float) -> tuple[object, ...]:
    started = r.get("started_at") is not None
    return (
        r.get("index", "?"),
        r.get("target") or (f"{r['node']}:-" if r.get("node") else "-"),
        replica_state(r),
        cpu_seconds(float(r.get("cpu_user", 0)) + float(r.get("cpu_sys", 0))) if started else "-",
        human_bytes(r.get("max_rss")) if r.get("max_rss") else "-",
        replica_time(r, now),
        r.get("reason") or "",
    )


STEP_DONE = {"sending": "sent", "unpacking": "unpacked"}
SEND_WAITING = "waiting for its turn"  # how a send's note starts while others go first


def _seconds(t: float) -> str:
    return f"{t * 1000:.0f}ms" if t < 0.1 else duration(t)


def step_text(step: Ticket, now: float) -> str:
    """One step: ``sending 34% 1.2s``, ``sent 100M 0.8s``, ``unpacking 0.3s``, ``unpacked 40ms``;
    ``waiting to send 0.4s`` while other nodes are sent the bundle first."""
    name = str(step.get("name") or "?")
    start = float(step.get("started_at") or now)
    end = step.get("ended_at")
    took = _seconds((float(end) if end is not None else now) - start)
    if step.get("failed"):
        return f"{name} failed {took}"
    if end is None:
        total = int(step.get("total") or 0)
        if name == "sending" and str(step.get("note") or "").startswith(SEND_WAITING):
            return f"waiting to send {took}"
        if name == "sending" and total:
            pct = min(100, int(step.get("done") or 0) * 100 // total)
            return f"sending {pct}% {took}"
        return f"{name} {took}"
    if name == "sending":
        sent = int(step.get("sent") or 0)
        return f"sent {human_bytes(sent)} {took}" if sent else f"had it {took}"
    return f"{STEP_DONE.get(name, name)} {took}"


def steps_text(r: Ticket, now: float) -> str:
    """A replica's steps with their times, then its process's: ``sent 100M 0.8s, unpacked
    40ms, running 3.2s``."""
    parts = [step_text(s, now) for s in r.get("steps") or []]
    start = r.get("started_at")
    if start is not None:
        end = r.get("ended_at")
        word = "ran" if end is not None else "running"
        parts.append(f"{word} {_seconds((float(end) if end else now) - float(start))}")
    return ", ".join(parts)


def ticket_lines(job: Ticket, now: float | None = None) -> list[str]:
    """The whole ticket: the job, then a table of its replicas."""
    now = time.time() if now is None else now
    state = str(job.get("state", "?"))
    if state == "queued" and job.get("position"):
        state += f", position {job['position']} in the queue"
    lines = [
        f"job {job.get('id')} ({job.get('name')}): {state}, {replicas_text(job)} replicas running",
        f"  command    {' '.join(job.get('argv') or [])}",
        f"  app        {job.get('app')}",
        *(f"  env        {k}={v}" for k, v in (job.get("env") or {}).items()),
        f"  memory     {memory_text(job)} (held on the nodes while a replica runs)",
        f"  submitted  {_when(job.get('submitted_at'), now)}",
        f"  started    {_when(job.get('started_at'), now)}",
        f"  ended      {_when(job.get('ended_at'), now)}",
    ]
    if job.get("outputs"):
        lines.append(f"  outputs    {', '.join(job['outputs'])}")
    if job.get("bundle"):
        size = human_bytes(job.get("bundle_bytes") or 0)
        lines.append(
            f"  bundle     {job.get('bundle_name')} ({size}, sha256 {str(job['bundle'])[:12]})"
        )
    if job.get("purged"):
        lines.append("  workdirs   purged from the nodes")
    if job.get("reason"):
        lines.append(f"  reason     {job['reason']}")
    reps = job.get("replicas") or []
    rows = [replica_row(r, now) for r in reps]
    headers: tuple[str, ...] = REPLICA_HEADERS
    if any(r.get("steps") for r in reps):  # a bundle: each replica's steps before its reason
        headers = (*REPLICA_HEADERS[:-1], "STEPS", REPLICA_HEADERS[-1])
        rows = [(*row[:-1], steps_text(r, now), row[-1]) for row, r in zip(rows, reps, strict=True)]
    lines.append("")
    lines.extend(render(headers, rows, right=("CPU", "MAX RSS", "TIME")).splitlines())
    return lines


def submitted_line(job: Ticket) -> str:
    """What ``submit`` says on stderr beside the id it prints."""
    state = job.get("state")
    if state == "queued":
        where = f"position {job.get('position')}" if job.get("position") else "queued"
        return f"job {job.get('id')} queued ({where}): {job.get('reason') or 'waiting'}"
    nodes = sorted({str(r.get("node")) for r in job.get("replicas") or [] if r.get("node")})
    return f"job {job.get('id')} {state} on {', '.join(nodes)}"
