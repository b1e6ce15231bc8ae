"""The event log on disk: bounded by rotation, private, read from its tail; the rate limiter."""

from __future__ import annotations

import stat
import time
import tracemalloc
from pathlib import Path

import msgspec

from corral.master.events import EventLog, RateLimiter, tail_lines
from corral.master.model import Event


def ev(i: int, message: str = "") -> Event:
    return Event(ts=float(i), kind="test", node="n1", message=message or f"event {i}")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_log_is_created_private_and_an_old_public_one_is_made_private(
    tmp_path: Path,
) -> None:
    log = EventLog(tmp_path / "new" / "events.log")
    log.append(ev(1))
    assert mode(log.path) == 0o600 and mode(log.path.parent) == 0o700
    log.close()
    old = tmp_path / "events.log"
    old.write_bytes(msgspec.json.encode(ev(0)) + b"\n")
    old.chmod(0o644)  # as an older corral left it
    log = EventLog(old)
    log.append(ev(1))
    log.close()
    assert mode(old) == 0o600
    assert [e.ts for e in log.read(10)] == [0.0, 1.0]


def test_the_log_rotates_at_its_size_keeping_one_old_file(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.log", max_bytes=4096)
    for i in range(1000):
        log.append(ev(i))
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.log", "events.log.1"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    assert mode(tmp_path / "events.log.1") == 0o600
    # The newest events, in order, across the two files.
    got = [int(e.ts) for e in log.read(100)]
    assert got == list(range(900, 1000))
    on_disk = sum(len(p.read_bytes().splitlines()) for p in tmp_path.iterdir())
    assert 4096 // 80 < on_disk < 1000
    assert [int(e.ts) for e in log.read(10_000)] == list(range(1000 - on_disk, 1000))


def test_reading_the_tail_of_a_big_log_costs_what_the_tail_needs(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    line = msgspec.json.encode(ev(0, "x" * 150)) + b"\n"
    with open(path, "wb") as f:  # 32 MiB of events
        for _ in range(32 * 1024 * 1024 // len(line)):
            f.write(line)
        f.write(msgspec.json.encode(ev(7, "last")) + b"\n")
    log = EventLog(path)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        events = log.read(100)
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(events) == 100 and events[-1].message == "last"
    assert peak < 1024 * 1024, f"peak {peak} bytes to read 100 lines of 32 MiB"
    assert took < 0.5


def test_tail_lines_handles_blocks_partial_lines_and_short_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    lines = [b"line %d " % i + b"y" * (i % 50) for i in range(500)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    for count in (0, 1, 7, 499, 500, 501):
        for block in (1, 5, 64, 4096):
            assert tail_lines(path, count, block) == (lines[-count:] if count else []), (
                count,
                block,
            )
    path.write_bytes(b"no newline at all")
    assert tail_lines(path, 3, 4) == [b"no newline at all"]
    assert tail_lines(tmp_path / "missing", 3) == []


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    path.write_bytes(
        msgspec.json.encode(ev(1)) + b"\n{half a li\n\xff\n" + msgspec.json.encode(ev(2)) + b"\n"
    )
    assert [e.ts for e in EventLog(path).read(10)] == [1.0, 2.0]


def test_a_log_that_cannot_be_written_does_not_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = EventLog(blocker / "events.log")  # its directory is a file
    log.append(ev(1))
    assert log.read(10) == []


# --- RateLimiter -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_interval_then_the_count_of_the_rest() -> None:
    clock = Clock()
    limiter = RateLimiter(interval=10.0, clock=clock)
    assert limiter.admit("10.0.0.7", "refused 10.0.0.7: bad token") == "refused 10.0.0.7: bad token"
    for _ in range(41):
        clock.now += 0.1
        assert limiter.admit("10.0.0.7", "refused 10.0.0.7: bad token") is None
    assert limiter.admit("10.0.0.8", "refused 10.0.0.8") == "refused 10.0.0.8"  # its own key
    clock.now += 10.0
    assert limiter.admit("10.0.0.7", "refused 10.0.0.7: again") == (
        "refused 10.0.0.7: again (41 more suppressed)"
    )
    assert limiter.admit("10.0.0.7", "x") is None


def test_flush_reports_keys_that_went_quiet_with_lines_held_back() -> None:
    clock = Clock()
    limiter = RateLimiter(interval=10.0, clock=clock)
    limiter.admit("a", "a")
    limiter.admit("a", "a")
    limiter.admit("a", "a")
    limiter.admit("b", "b")
    assert limiter.flush() == {}  # still within the interval
    clock.now += 10.0
    assert limiter.flush() == {"a": 2}
    assert limiter.flush() == {}
    assert limiter.admit("a", "a") == "a"  # the count was handed over by flush


def test_a_flood_of_keys_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(interval=10.0, max_keys=100, clock=clock)
    admitted = [limiter.admit(f"10.0.{i // 256}.{i % 256}", f"refused {i}") for i in range(10_000)]
    assert sum(a is not None for a in admitted) == 101  # 100 keys, then one shared key
    assert len(limiter._last) <= 101 and len(limiter._dropped) <= 1
    clock.now += 10.0
    assert limiter.flush() == {"*": 10_000 - 101}
    assert limiter.admit("new", "new") == "new"  # quiet keys were forgotten
