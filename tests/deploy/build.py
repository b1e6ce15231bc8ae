"""Build small C programs and shared libraries with gcc for the deploy tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

GREET_C = 'const char *greet(void) { return "hello from libgreet"; }\n'

INNER_C = 'const char *inner(void) { return "inner"; }\n'

GREET_VIA_INNER_C = """
const char *inner(void);
const char *greet(void) { return inner(); }
"""

HELLO_C = """
#include <stdio.h>
const char *greet(void);
int main(void) { puts(greet()); return 0; }
"""


def gcc(*args: str | Path) -> None:
    """Run gcc, failing the test with its stderr when it fails."""
    done = subprocess.run(["gcc", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def shared_lib(src: str, out: Path, *link: str | Path) -> Path:
    """Compile ``src`` into ``out`` (soname = its file name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    c = out.with_suffix(".c")
    c.write_text(src)
    gcc("-shared", "-fPIC", f"-Wl,-soname,{out.name}", "-o", out, c, *link)
    return out


def program(src: str, out: Path, *link: str | Path) -> Path:
    """Compile and link the program ``src`` into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    c = out.parent / (out.name + ".c")
    c.write_text(src)
    gcc("-o", out, c, *link)
    return out


def hello_app(root: Path, *rpath_flags: str) -> tuple[Path, Path]:
    """``root/bin/hello`` linked against ``root/lib/libgreet.so`` with rpath $ORIGIN/../lib."""
    lib = shared_lib(GREET_C, root / "lib" / "libgreet.so")
    exe = program(
        HELLO_C,
        root / "bin" / "hello",
        f"-L{lib.parent}",
        "-lgreet",
        "-Wl,-rpath,$ORIGIN/../lib",
        *rpath_flags,
    )
    return exe, lib
