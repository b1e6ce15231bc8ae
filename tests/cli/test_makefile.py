"""The Makefile on a machine whose python3 makes venvs without pip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_venv_without_pip_is_removed_and_the_fix_is_named(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "python"  # a python whose "-m pip" fails, as without ensurepip
    fake.write_text("#!/bin/sh\necho 'No module named pip' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = subprocess.run(
        ["make", "install"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "install python3-venv" in done.stderr, done.stderr
    assert not (tmp_path / ".venv").exists()  # the next make starts clean
