"""`daemon.exe.check` predicts what the kernel's exec will say, checked against the kernel."""

from __future__ import annotations

import errno
import os
import shutil
import struct
from pathlib import Path

import pytest

from corral.daemon import exe

LOADER = b"/lib64/ld-linux-x86-64.so.2"


def kernel_refuses(path: Path) -> int | None:
    """The errno the kernel's exec gives ``path``, or None if the exec went through."""
    try:
        pid = os.posix_spawn(str(path), [str(path)], {}, file_actions=_quiet())
    except OSError as e:
        return e.errno
    os.waitpid(pid, 0)
    return None


def _quiet() -> list[tuple[int, ...]]:
    return [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]  # type: ignore[misc]


def program(tmp_path: Path, name: str, data: bytes, mode: int = 0o755) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def true_elf() -> bytes:
    return Path(shutil.which("true") or "/bin/true").read_bytes()


def assert_agrees(path: Path, message: str | None) -> None:
    """check() refuses with ``message`` exactly when the kernel refuses the exec."""
    if message is None:
        exe.check(str(path))
        assert kernel_refuses(path) is None
    else:
        with pytest.raises(exe.NotExecutable) as refused:
            exe.check(str(path))
        assert str(refused.value) == message
        assert kernel_refuses(path) is not None


def test_programs_the_kernel_runs_pass(tmp_path: Path) -> None:
    assert_agrees(program(tmp_path, "true", true_elf()), None)
    assert_agrees(program(tmp_path, "script", b"#!/bin/sh\nexit 0\n"), None)
    assert_agrees(program(tmp_path, "spaced", b"#!  /bin/sh -e\nexit 0\n"), None)


def test_missing_interpreter_is_named(tmp_path: Path) -> None:
    script = program(tmp_path, "script", b"#!/no/such/python3\nprint(1)\n")
    assert_agrees(script, "bad interpreter /no/such/python3: No such file or directory")


def test_elf_cut_short_or_for_another_machine_is_a_format_error(tmp_path: Path) -> None:
    assert_agrees(program(tmp_path, "stub", b"\x7fELF garbage"), "Exec format error")
    data = bytearray(true_elf())
    struct.pack_into("<H", data, 18, 183)  # e_machine: AArch64, not this machine
    assert_agrees(program(tmp_path, "arm", bytes(data)), "Exec format error")
    assert kernel_refuses(tmp_path / "arm") == errno.ENOEXEC


def test_missing_elf_loader_is_named(tmp_path: Path) -> None:
    data = true_elf()
    if LOADER not in data:
        pytest.skip("this system's loader has another path")
    gone = b"/lib64/ld-nowhere-x86-64.so.9"[: len(LOADER)].ljust(len(LOADER), b"x")
    path = program(tmp_path, "orphan", data.replace(LOADER, gone, 1))
    assert_agrees(path, f"its loader {gone.decode()} is missing")
    assert kernel_refuses(path) == errno.ENOENT


def test_text_without_shebang_is_a_format_error(tmp_path: Path) -> None:
    if exe._other_formats():
        pytest.skip("binfmt_misc may run such files here")
    assert_agrees(program(tmp_path, "notes", b"echo hi\n"), "Exec format error")


def test_not_executable_or_not_a_file(tmp_path: Path) -> None:
    assert_agrees(program(tmp_path, "plain", b"#!/bin/sh\n", mode=0o644), "Permission denied")
    (tmp_path / "dir").mkdir()
    assert_agrees(tmp_path / "dir", "Permission denied")
    with pytest.raises(exe.NotExecutable, match="No such file or directory"):
        exe.check(str(tmp_path / "absent"))
