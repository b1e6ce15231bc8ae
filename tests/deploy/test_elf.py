"""Dependency resolution on gcc-built programs, checked against the real loader."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from corral.master.elf import DependencyError, read_ld_so_cache, read_ld_so_conf, resolve
from tests.deploy.build import (
    GREET_C,
    GREET_VIA_INNER_C,
    HELLO_C,
    INNER_C,
    hello_app,
    program,
    shared_lib,
)

pytestmark = pytest.mark.usefixtures("gcc")


def run(exe: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a program we built, so the real loader can confirm our resolution."""
    return subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=10)


def test_rpath_origin_library_is_copied_and_libc_is_not(tmp_path: Path) -> None:
    exe, lib = hello_app(tmp_path)
    plan = resolve(exe, ld_library_path="")
    assert plan.is_elf
    assert plan.executable == exe
    assert [p.resolve() for p in plan.libraries] == [lib.resolve()]
    assert "libc.so.6" in plan.system
    assert not any(p.name.startswith("libc.so") for p in plan.libraries)
    assert run(exe).stdout == "hello from libgreet\n"


def test_rpath_is_inherited_by_libraries_but_runpath_is_not(tmp_path: Path) -> None:
    # libgreet needs libinner and has no search path of its own: only an
    # inherited DT_RPATH of the executable can find it, as ld.so does.
    for tags, inherited in (("--disable-new-dtags", True), ("--enable-new-dtags", False)):
        root = tmp_path / tags.strip("-")
        inner = shared_lib(INNER_C, root / "lib" / "libinner.so")
        greet = shared_lib(
            GREET_VIA_INNER_C, root / "lib" / "libgreet.so", f"-L{inner.parent}", "-linner"
        )
        exe = program(
            HELLO_C, root / "bin" / "hello", f"-L{greet.parent}", "-lgreet",
            "-Wl,-rpath,$ORIGIN/../lib", f"-Wl,{tags}",
        )  # fmt: skip
        if inherited:
            plan = resolve(exe, ld_library_path="")
            assert [p.name for p in plan.libraries] == ["libgreet.so", "libinner.so"]
            assert run(exe).stdout == "inner\n"
        else:
            with pytest.raises(DependencyError) as info:
                resolve(exe, ld_library_path="")
            assert info.value.soname == "libinner.so"
            assert info.value.needed_by.name == "libgreet.so"
            assert "libinner.so" in run(exe).stderr  # the real loader agrees


def test_missing_library_is_an_error_naming_it_and_its_user(tmp_path: Path) -> None:
    exe, lib = hello_app(tmp_path)
    lib.unlink()
    with pytest.raises(DependencyError, match=r"libgreet\.so: not found \(needed by .*hello\)"):
        resolve(exe, ld_library_path="")


def test_ld_library_path_is_searched(tmp_path: Path) -> None:
    lib = shared_lib(GREET_C, tmp_path / "libs" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "hello", f"-L{lib.parent}", "-lgreet")
    with pytest.raises(DependencyError):
        resolve(exe, ld_library_path="")
    plan = resolve(exe, ld_library_path=f"/nonexistent:{lib.parent}")
    assert plan.libraries == [lib]


def test_braced_origin_is_expanded(tmp_path: Path) -> None:
    lib = shared_lib(GREET_C, tmp_path / "app" / "private" / "libgreet.so")
    exe = program(
        HELLO_C, tmp_path / "app" / "hello", f"-L{lib.parent}", "-lgreet",
        "-Wl,-rpath,${ORIGIN}/private",
    )  # fmt: skip
    assert resolve(exe, ld_library_path="").libraries == [lib]
    assert run(exe).returncode == 0


def _fake_elf32(path: Path) -> None:
    """An i386 ELF header, padded past a 64-bit header's size: a file ld.so skips."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 3, 3, 1, 0, 0, 0, 0, 52, 0, 0, 40, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.ljust(1024, b"\0"))


def test_wrong_class_candidate_is_skipped(tmp_path: Path) -> None:
    real = shared_lib(GREET_C, tmp_path / "c" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "hello", f"-L{real.parent}", "-lgreet")
    _fake_elf32(tmp_path / "a" / "libgreet.so")
    search = f"{tmp_path / 'a'}:{real.parent}"
    assert resolve(exe, ld_library_path=search).libraries == [real]
    assert run(exe, LD_LIBRARY_PATH=search).stdout == "hello from libgreet\n"


def test_non_elf_candidate_stops_the_search_as_in_the_loader(tmp_path: Path) -> None:
    real = shared_lib(GREET_C, tmp_path / "c" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "hello", f"-L{real.parent}", "-lgreet")
    script = tmp_path / "b" / "libgreet.so"
    script.parent.mkdir()
    script.write_text("/* GNU ld script */\nINPUT(-lgreet)\n" + " " * 200)
    search = f"{script.parent}:{real.parent}"
    with pytest.raises(DependencyError, match="not an ELF file"):
        resolve(exe, ld_library_path=search)
    assert "invalid ELF header" in run(exe, LD_LIBRARY_PATH=search).stderr


def test_script_deploys_alone(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    plan = resolve(script)
    assert (plan.executable, plan.libraries, plan.system, plan.is_elf) == (script, [], [], False)


def test_extra_libs_are_added_with_their_dependencies(tmp_path: Path) -> None:
    inner = shared_lib(INNER_C, tmp_path / "plugins" / "libinner.so")
    plugin = shared_lib(
        GREET_VIA_INNER_C, tmp_path / "plugins" / "libplugin.so",
        f"-L{inner.parent}", "-linner", "-Wl,-rpath,$ORIGIN",
    )  # fmt: skip
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    exe, _ = hello_app(tmp_path / "app")
    plan = resolve(exe, [plugin], ld_library_path="")
    assert [p.name for p in plan.libraries] == ["libplugin.so", "libgreet.so", "libinner.so"]
    assert resolve(script, [plugin]).libraries == [plugin]


def test_extra_lib_satisfies_a_needed_name(tmp_path: Path) -> None:
    lib = shared_lib(GREET_C, tmp_path / "elsewhere" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "hello", f"-L{lib.parent}", "-lgreet")
    assert resolve(exe, [lib], ld_library_path="").libraries == [lib]


def test_ld_so_cache_is_parsed() -> None:
    cache = read_ld_so_cache()
    if not cache:
        pytest.skip("this system has no /etc/ld.so.cache")
    assert any(p.name == "libc.so.6" and p.exists() for p in cache["libc.so.6"])


def test_ld_so_conf_fallback_makes_its_dirs_system(tmp_path: Path) -> None:
    syslib = shared_lib(GREET_C, tmp_path / "opt" / "sys" / "libgreet.so")
    exe = program(HELLO_C, tmp_path / "hello", f"-L{syslib.parent}", "-lgreet")
    conf = tmp_path / "ld.so.conf"
    conf.write_text("# test\ninclude ld.so.conf.d/*.conf\n")
    (tmp_path / "ld.so.conf.d").mkdir()
    (tmp_path / "ld.so.conf.d" / "x.conf").write_text(f"{syslib.parent}\n")
    assert read_ld_so_conf(conf) == [syslib.parent]
    plan = resolve(exe, ld_library_path="", ld_so_cache=tmp_path / "none", ld_so_conf=conf)
    assert plan.libraries == []
    assert plan.system == ["libgreet.so", "libc.so.6"]
