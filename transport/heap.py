"""glibc's allocator, told to keep buffers of a few hundred KiB: what an SFTP sender needs.

paramiko builds every SFTP write request (255 KiB here, `sftp.WRITE_REQUEST`)
out of new ``bytes`` of about that size: the chunk read from the file, the
request, the same with its length prefix, the channel's slices.  glibc
serves an allocation of 128 KiB or more with a fresh ``mmap`` and returns
it with ``munmap`` when freed, so every one of those buffers faults its
pages in, zeroed, until glibc raises that threshold on its own (it does
when a larger mapping is freed, which a deploy's sha256 of 1 MiB reads
happened to do).  Measured through a master on the 2-core VM, 200 MB to
one node: the first deploy of a master used 0.92-0.96 s of its CPU and
took 1.26-1.30 s; with the thresholds below set first, 0.42-0.46 s and
0.68-0.86 s.

`keep_large_buffers` raises the threshold to 4 MiB (above the 1 MiB reads of
the deploy's hash) and keeps up to 8 MiB free at the top of the heap
before returning it to the kernel: a sending process holds at most a few
MiB more, and reuses it.  Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import threading

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # bytes: smaller allocations come from the heap
TRIM_THRESHOLD = 8 << 20  # bytes free at the heap's top before it is given back

_lock = threading.Lock()
_done: bool | None = None


def keep_large_buffers() -> bool:
    """Set the thresholds once per process; True if this libc took them."""
    global _done
    with _lock:
        if _done is None:
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # no such symbol: not glibc (or not Linux)
                _done = False
            else:
                mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                mallopt.restype = ctypes.c_int
                _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                )
        return _done
