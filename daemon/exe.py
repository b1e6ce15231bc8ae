"""Will the kernel exec this file?  Asked before a launch is answered.

The launch reply goes out before the seed execs the program (see
`daemon.shim`), so the exec's usual refusals are checked here first, to
come back as a clear error rather than as a process that ends at once:
not a regular file or not executable, an ELF file for another machine or
cut short, an ELF loader or a ``#!`` interpreter that is missing.  Reading
a few hundred bytes costs some tens of microseconds.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import struct
import sys

_ELF = b"\x7fELF"
_HEAD = 4096  # program headers nearly always sit in the first page
_ET_EXEC, _ET_DYN = 2, 3
_PT_INTERP = 3
_EM_386, _EM_X86_64 = 3, 62


class NotExecutable(Exception):
    """The file cannot be executed; the message says why, after "cannot execute 'X': "."""


def check(path: str) -> None:
    """Raise `NotExecutable` if the kernel would refuse to exec ``path``."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise NotExecutable(os.strerror(e.errno or errno.ENOENT)) from None
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        raise NotExecutable(os.strerror(errno.EACCES))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # execute-only: the kernel may read what we cannot
    try:
        _check_head(fd)
    finally:
        os.close(fd)


def check_fd(fd: int) -> bool:
    """Like `check`, for a file already open (for reading, or ``O_PATH``); True for a script.

    What is checked is exactly the file behind ``fd``: no path is looked up
    again (see `daemon.beneath`).
    """
    st = os.fstat(fd)
    # The magic link names exactly this file, whatever its path has become.
    if not stat.S_ISREG(st.st_mode) or not os.access(f"/proc/self/fd/{fd}", os.X_OK):
        raise NotExecutable(os.strerror(errno.EACCES))
    try:
        return _check_head(fd)
    except OSError as e:
        if e.errno == errno.EBADF:
            return False  # an O_PATH fd of an execute-only file: the kernel may read it
        raise


def _check_head(fd: int) -> bool:
    """Check the format from the file's first bytes; True for a ``#!`` script."""
    head = os.pread(fd, _HEAD, 0)
    if head.startswith(_ELF):
        _check_elf(fd, head)
    elif head.startswith(b"#!"):
        _check_script(head)
        return True
    elif not _other_formats():
        raise NotExecutable(os.strerror(errno.ENOEXEC))
    return False


def _check_elf(fd: int, head: bytes) -> None:
    bad = NotExecutable(os.strerror(errno.ENOEXEC))
    if len(head) < 20:
        raise bad
    cls, order = head[4], head[5]
    end = {1: "<", 2: ">"}.get(order)
    size = {1: 52, 2: 64}.get(cls)
    if end is None or size is None or len(head) < size:
        raise bad
    e_type, machine = struct.unpack_from(end + "HH", head, 16)
    runnable = _runnable()
    if e_type not in (_ET_EXEC, _ET_DYN) or (runnable and (cls, machine) not in runnable):
        raise bad
    if cls == 2:
        (phoff,) = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        layout = end + "I4xQ16xQ"  # p_type, p_offset, p_filesz
    else:
        (phoff,) = struct.unpack_from(end + "I", head, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
        layout = end + "II8xI"
    want = struct.calcsize(layout)
    if phentsize < want:
        raise bad
    for i in range(phnum):
        at = phoff + i * phentsize
        entry = head[at : at + want] if at + want <= len(head) else os.pread(fd, want, at)
        if len(entry) < want:
            raise bad
        p_type, offset, filesz = struct.unpack(layout, entry)
        if p_type == _PT_INTERP:
            loader = os.pread(fd, min(filesz, 4096), offset).split(b"\0", 1)[0]
            if not loader or not os.access(loader, os.X_OK):
                raise NotExecutable(f"its loader {os.fsdecode(loader)} is missing")
            return


def _check_script(head: bytes) -> None:
    line = head[2:].split(b"\n", 1)[0].strip()
    interp = line.split(None, 1)[0] if line else b""
    if not interp:
        raise NotExecutable(os.strerror(errno.ENOEXEC))
    if not interp.startswith(b"/"):
        return  # found from the app's directory, where the exec runs
    if not os.access(interp, os.X_OK) or os.path.isdir(interp):
        name = os.fsdecode(interp)
        raise NotExecutable(f"bad interpreter {name}: {os.strerror(errno.ENOENT)}")


@functools.cache
def _runnable() -> frozenset[tuple[int, int]]:
    """(ELF class, machine) pairs this kernel runs: this interpreter's own, plus i386 on x86-64.

    Empty when unknown (then any machine passes, and the exec decides).
    """
    try:
        with open(sys.executable, "rb") as f:
            head = f.read(20)
    except OSError:
        return frozenset()
    if not head.startswith(_ELF) or len(head) < 20:
        return frozenset()
    end = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(end + "H", head, 18)
    pairs = {(head[4], machine)}
    if machine == _EM_X86_64:
        pairs.add((1, _EM_386))
    return frozenset(pairs)


def _other_formats() -> bool:
    """Whether binfmt_misc may run files that are neither ELF nor scripts."""
    try:
        return bool(set(os.listdir("/proc/sys/fs/binfmt_misc")) - {"register", "status"})
    except OSError:
        return False
