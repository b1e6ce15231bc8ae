"""The records in ROOT/run: one schema, written by the shim and by the daemon alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from corral.daemon import records
from corral.daemon.records import ExitRecord, LaunchRecord
from tests.daemon.harness import REPO, ended, launch_in, wait_for


def a_record(**kw: object) -> LaunchRecord:
    fields: dict = dict(
        launch="20260101-000000.000-abcd",
        pid=10,
        shim=9,
        shim_start=100,
        app="demo",
        argv=["sleep", "30", "é"],
        started_at=1767225600.25,
        start=101,
        boot_id="b",
    )
    return LaunchRecord(**(fields | kw))


def test_a_launch_record_round_trips(tmp_path: Path):
    rec = a_record()
    records.save_launch(tmp_path, rec)
    on_disk = json.loads((tmp_path / f"{rec.launch}.json").read_bytes())
    assert "unknown_at" not in on_disk  # unset fields are left out
    assert records.launch_records(tmp_path) == [rec]
    marked = a_record(unknown_at=1767225601.5)
    records.save_launch(tmp_path, marked)
    assert records.load_launch(tmp_path / f"{rec.launch}.json") == marked
    assert (tmp_path / f"{rec.launch}.json").stat().st_mode & 0o777 == 0o600


def test_an_exit_record_round_trips(tmp_path: Path):
    ex = ExitRecord(status=3 << 8, utime=0.5, stime=0.25, maxrss=4 << 20, ended_at=2.0, base=1)
    records.save_exit(tmp_path, "x", ex)
    assert records.load_exit(tmp_path, "x") == ex


def test_a_record_of_the_wrong_shape_is_none(tmp_path: Path):
    good = json.loads(records.encode(a_record()))
    (tmp_path / "a.json").write_text(json.dumps(good | {"pid": "ten"}))
    (tmp_path / "b.json").write_text(json.dumps({k: v for k, v in good.items() if k != "app"}))
    (tmp_path / "c.json").write_text("{")
    (tmp_path / "x.exit").write_text('{"status": 0}')
    assert records.launch_records(tmp_path) == []
    assert records.load_exit(tmp_path, "x") is None


async def test_the_shims_records_are_the_daemons(supervisors, root: Path):
    """The shim writes the very record the daemon keeps, then a whole exit record."""
    sup = supervisors()
    proc = await launch_in(sup, "sh", "-c", "exit 3")
    launch = proc.rec.launch
    await wait_for((root / "run" / f"{launch}.json").exists, what="the shim's launch record")
    assert records.launch_records(sup.run_dir) == [proc.rec]
    await ended(proc)
    ex = records.load_exit(sup.run_dir, launch)
    assert ex is not None and os.WEXITSTATUS(ex.status) == 3
    assert ex.ended_at >= proc.rec.started_at and ex.base > 0
    assert proc.info.exit_code == 3


def test_the_forker_imports_no_msgspec_and_no_transport():
    """The forker and every shim and seed share its pages: the records' module stays light."""
    code = "import sys, corral.daemon.shim; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    assert {"corral.daemon.records", "corral.daemon.procfs"} <= loaded
    assert not {m for m in loaded if m.startswith(("msgspec", "corral.transport"))}
