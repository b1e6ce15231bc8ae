"""Which files an executable needs on a node: its non-system shared libraries.

Pure and local: the ELF dynamic sections are read with pyelftools (never by
running ``ldd``, which may execute the file), and each ``DT_NEEDED`` name is
looked up the way glibc's loader does (``elf/dl-load.c``)::

    1. DT_RPATH of the requesting object, then of each object that loaded
       it up to the executable -- only when the requester has no DT_RUNPATH,
       and for each object only when that object has no DT_RUNPATH itself
    2. LD_LIBRARY_PATH
    3. DT_RUNPATH of the requesting object only (it is not inherited)
    4. /etc/ld.so.cache (or, without one, the dirs of /etc/ld.so.conf)
    5. the default dirs (/lib, /usr/lib, their lib64 and multiarch forms)

A candidate must be an ELF of the executable's class, byte order and
machine; one of another kind (a 32-bit copy) is skipped as the loader skips
it, while a file that is not ELF at all (a linker script) stops the search
with an error, as it stops the loader.

A library that lands in a *system* directory (from the cache, ld.so.conf or
the defaults) is taken as present on every node: it is not copied and its
own dependencies are not followed.
"""

from __future__ import annotations

import glob
import os
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.transport.lazy import lazy

if TYPE_CHECKING:
    from elftools.common import exceptions as elf_errors
    from elftools.elf import dynamic as elf_dynamic
    from elftools.elf import elffile
else:  # by the first deploy, not by a master's start (see transport.lazy)
    elf_errors = lazy("elftools.common.exceptions")
    elf_dynamic = lazy("elftools.elf.dynamic")
    elffile = lazy("elftools.elf.elffile")

LD_SO_CACHE = Path("/etc/ld.so.cache")
LD_SO_CONF = Path("/etc/ld.so.conf")

_CACHE_MAGIC_NEW = b"glibc-ld.so.cache1.1"
_CACHE_HEADER = struct.Struct("<20sII4xI12x")  # magic+version, nlibs, len_strings, ext
_CACHE_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap

# e_machine -> (Debian multiarch triplet, $PLATFORM)
_ARCH: dict[int, tuple[str, str]] = {
    62: ("x86_64-linux-gnu", "x86_64"),
    3: ("i386-linux-gnu", "i686"),
    183: ("aarch64-linux-gnu", "aarch64"),
    40: ("arm-linux-gnueabihf", "v7l"),
    21: ("powerpc64le-linux-gnu", "powerpc64le"),
    22: ("s390x-linux-gnu", "s390x"),
    243: ("riscv64-linux-gnu", "riscv64"),
}


class DependencyError(Exception):
    """A needed library cannot be found; nothing may be sent."""

    def __init__(self, soname: str, needed_by: Path, reason: str = "not found") -> None:
        super().__init__(f"{soname}: {reason} (needed by {needed_by})")
        self.soname = soname
        self.needed_by = needed_by


@dataclass(frozen=True)
class DeployPlan:
    """What to copy: the executable and its non-system libraries, in load order.

    ``system`` names the sonames satisfied by system directories (not copied).
    ``is_elf`` is False for a script, whose plan is the file alone.
    """

    executable: Path
    libraries: list[Path]
    system: list[str]
    is_elf: bool


@dataclass(frozen=True)
class _Kind:
    """ELF identity a library must share with the executable to be loadable."""

    elfclass: int  # 1 = 32-bit, 2 = 64-bit
    data: int  # 1 = little endian, 2 = big endian
    machine: int


@dataclass(frozen=True)
class _Object:
    """One loaded object: its path and the dynamic entries that steer lookups."""

    path: Path
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str


# --------------------------------------------------------------------------
# Reading ELF files
# --------------------------------------------------------------------------


def elf_kind(path: Path) -> _Kind | None:
    """The ELF class, byte order and machine of ``path``; None if not an ELF file."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[5] not in (1, 2):
        return None
    order = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(order + "H", head, 18)
    return _Kind(elfclass=head[4], data=head[5], machine=machine)


def _dynamic(elf: Any) -> Any:
    """The dynamic section, or the PT_DYNAMIC segment of a section-stripped file."""
    for section in elf.iter_sections():
        if isinstance(section, elf_dynamic.DynamicSection):
            return section
    for segment in elf.iter_segments():
        if isinstance(segment, elf_dynamic.DynamicSegment):
            return segment
    return None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.split(":") if part)


def _read_object(path: Path, needed_by: Path | None = None) -> _Object:
    needed: list[str] = []
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    soname = ""
    try:
        with path.open("rb") as f:
            dynamic = _dynamic(elffile.ELFFile(f))
            for tag in dynamic.iter_tags() if dynamic is not None else ():
                kind = str(tag.entry.d_tag)
                if kind == "DT_NEEDED":
                    needed.append(str(tag.needed))
                elif kind == "DT_RPATH":
                    rpath = _split(str(tag.rpath))
                elif kind == "DT_RUNPATH":
                    runpath = _split(str(tag.runpath))
                elif kind == "DT_SONAME":
                    soname = str(tag.soname)
    except (elf_errors.ELFError, ValueError, struct.error) as exc:
        reason = f"{path} is not a readable ELF file: {exc}"
        raise DependencyError(path.name, needed_by or path, reason) from exc
    return _Object(path, tuple(needed), rpath, runpath, soname)


# --------------------------------------------------------------------------
# The system's library directories
# --------------------------------------------------------------------------


def read_ld_so_cache(path: Path = LD_SO_CACHE) -> dict[str, list[Path]]:
    """Parse glibc's ld.so.cache (the "glibc-ld.so.cache1.1" format): soname -> paths.

    An old-format file that embeds the new format is read through the
    embedded part; a missing or unreadable cache gives an empty dict.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    base = data.find(_CACHE_MAGIC_NEW)
    if base < 0 or len(data) < base + _CACHE_HEADER.size:
        return {}
    _, nlibs, _, _ = _CACHE_HEADER.unpack_from(data, base)
    found: dict[str, list[Path]] = {}
    for i in range(nlibs):
        offset = base + _CACHE_HEADER.size + i * _CACHE_ENTRY.size
        if offset + _CACHE_ENTRY.size > len(data):
            break
        _, key, value, _, _ = _CACHE_ENTRY.unpack_from(data, offset)
        name, target = _cstr(data, base + key), _cstr(data, base + value)
        if name and target:
            found.setdefault(name, []).append(Path(target))
    return found


def _cstr(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        return ""
    return data[offset:end].decode("utf-8", "surrogateescape")


def read_ld_so_conf(path: Path = LD_SO_CONF, _seen: set[Path] | None = None) -> list[Path]:
    """The library dirs listed in ld.so.conf, following ``include`` globs."""
    seen = set() if _seen is None else _seen
    if path in seen:
        return []
    seen.add(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("hwcap "):
            continue
        if line.startswith("include"):
            for pattern in line.split()[1:]:
                full = pattern if pattern.startswith("/") else str(path.parent / pattern)
                for conf in sorted(glob.glob(full)):
                    dirs.extend(read_ld_so_conf(Path(conf), seen))
            continue
        dirs.extend(Path(d) for d in line.replace(",", " ").split() if d.startswith("/"))
    return dirs


def default_dirs(kind: _Kind) -> list[Path]:
    """The loader's built-in dirs for this kind of ELF, multiarch first."""
    triplet = _ARCH.get(kind.machine, ("", ""))[0]
    dirs = [Path(f"/lib/{triplet}"), Path(f"/usr/lib/{triplet}")] if triplet else []
    if kind.elfclass == 2:
        dirs += [Path("/lib64"), Path("/usr/lib64")]
    else:
        dirs += [Path("/lib32"), Path("/usr/lib32")]
    return [*dirs, Path("/lib"), Path("/usr/lib")]


def _canonical(directory: Path) -> str:
    """A dir's identity for "is this a system dir": /lib and /usr/lib may be one."""
    return os.path.realpath(directory)


# --------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------


class _Resolver:
    def __init__(
        self, kind: _Kind, ld_library_path: str, cache: dict[str, list[Path]], conf: list[Path]
    ) -> None:
        self.kind = kind
        self.ld_library_path = _split(ld_library_path.replace(";", ":"))
        self.cache = cache
        self.conf = conf
        self.defaults = default_dirs(kind)
        system = [*conf, *self.defaults, *(p.parent for ps in cache.values() for p in ps)]
        self.system_dirs = {_canonical(d) for d in system}

    def expand(self, entry: str, owner: Path) -> Path:
        """Expand $ORIGIN, $LIB and $PLATFORM in one search-path entry of ``owner``."""
        triplet, platform = _ARCH.get(self.kind.machine, ("", os.uname().machine))
        lib = f"lib/{triplet}" if triplet and Path(f"/lib/{triplet}").is_dir() else "lib"
        if self.kind.elfclass == 2 and lib == "lib" and Path("/lib64").is_dir():
            lib = "lib64"
        origin = str(owner.absolute().parent)
        for var, value in (("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)):
            entry = entry.replace("${" + var + "}", value).replace("$" + var, value)
        return Path(entry)

    def loadable(self, path: Path) -> bool:
        return path.is_file() and elf_kind(path) == self.kind

    def search(self, name: str, chain: tuple[_Object, ...]) -> Path | None:
        """Find ``name`` needed by ``chain[-1]`` (``chain`` is loader first)."""
        if "/" in name:
            path = Path(name)
            return path if self.loadable(path) else None
        requester = chain[-1]
        dirs: list[Path] = []
        if not requester.runpath:
            for obj in reversed(chain):
                if not obj.runpath:
                    dirs += [self.expand(e, obj.path) for e in obj.rpath]
        dirs += [Path(d) for d in self.ld_library_path]
        dirs += [self.expand(e, requester.path) for e in requester.runpath]
        candidates: list[Path] = [d / name for d in dirs]
        # With a cache, ld.so.conf's dirs are reached only through it.
        candidates += self.cache.get(name, []) if self.cache else [d / name for d in self.conf]
        candidates += [d / name for d in self.defaults]
        for candidate in candidates:
            if not candidate.is_file():
                continue
            kind = elf_kind(candidate)
            if kind is None:
                # ld.so skips another class or machine, but stops at a non-ELF file.
                reason = f"{candidate} is not an ELF file, and the loader stops there"
                raise DependencyError(name, requester.path, reason)
            if kind == self.kind:
                return candidate
        return None

    def is_system(self, path: Path) -> bool:
        return _canonical(path.parent) in self.system_dirs


def resolve(
    exe: Path,
    extra_libs: list[Path] | None = None,
    ld_library_path: str | None = None,
    *,
    ld_so_cache: Path = LD_SO_CACHE,
    ld_so_conf: Path = LD_SO_CONF,
) -> DeployPlan:
    """Plan what to copy for ``exe``: it, its non-system libraries and ``extra_libs``.

    ``ld_library_path`` defaults to this process's ``LD_LIBRARY_PATH``.
    Raises `DependencyError` naming the first library that cannot be found
    and the object that needs it.
    """
    extras = list(extra_libs or [])
    kind = elf_kind(exe)
    if kind is None:
        if not exe.is_file():
            raise FileNotFoundError(f"{exe}: no such file")
        return DeployPlan(exe, extras, [], is_elf=False)
    if ld_library_path is None:
        ld_library_path = os.environ.get("LD_LIBRARY_PATH", "")
    resolver = _Resolver(
        kind, ld_library_path, read_ld_so_cache(ld_so_cache), read_ld_so_conf(ld_so_conf)
    )
    libraries, system = _walk(resolver, exe, extras)
    return DeployPlan(exe, libraries, system, is_elf=True)


def _walk(resolver: _Resolver, exe: Path, extras: list[Path]) -> tuple[list[Path], list[str]]:
    """Breadth-first over NEEDED, as the loader maps them; each name loads once."""
    libraries: list[Path] = []
    system: list[str] = []
    loaded: set[str] = set()
    queue: deque[tuple[_Object, ...]] = deque([(_read_object(exe),)])
    for extra in extras:
        libraries.append(extra)
        loaded.add(extra.name)
        if elf_kind(extra) is not None:
            obj = _read_object(extra)
            loaded.add(obj.soname or extra.name)
            queue.append((obj,))
    while queue:
        chain = queue.popleft()
        for name in chain[-1].needed:
            if name in loaded:
                continue
            loaded.add(name)
            found = resolver.search(name, chain)
            if found is None:
                raise DependencyError(name, chain[-1].path)
            if resolver.is_system(found):
                system.append(name)
                continue
            libraries.append(found)
            queue.append((*chain, _read_object(found, chain[-1].path)))
    return libraries, system
