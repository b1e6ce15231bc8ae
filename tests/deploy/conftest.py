"""Fixtures for the deploy tests: a real sshd, and gcc-built programs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.deploy.sshd import SSHD, Sshd, sshd_available, start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One private sshd on 127.0.0.1 for the whole session."""
    if not sshd_available():
        pytest.skip(f"OpenSSH server not installed ({SSHD}); .ci/run installs openssh-server")
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        pytest.skip("gcc not installed; .ci/run installs it")
    return path
