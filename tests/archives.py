"""Archives for the unpack tests, made fast where tarfile is slow.

`empty_files_tgz` writes a gzip'd tar of many empty regular files.  Building
100,000 members with `tarfile` takes about 10 s (a `TarInfo` and its header
a member); here each header is one template with its name and checksum
patched, the same bytes tarfile writes for an empty file of that name.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

NAME_FIELD = 100  # bytes 0..99 of a ustar header
CHKSUM = slice(148, 156)


def empty_file_header(name: str) -> bytes:
    """The 512-byte header tarfile writes for an empty regular file ``name`` (ASCII, short)."""
    raw = name.encode("ascii")
    assert len(raw) < NAME_FIELD
    header = bytearray(_TEMPLATE)
    header[:NAME_FIELD] = raw.ljust(NAME_FIELD, b"\0")
    header[CHKSUM] = b" " * 8  # the checksum counts its own field as spaces
    header[CHKSUM] = b"%06o\0 " % sum(header)
    return bytes(header)


def empty_files_tgz(path: Path, count: int, prefix: str = "f") -> Path:
    """A tar.gz of ``count`` empty files ``{prefix}0`` ... (what tarfile would write)."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        for i in range(0, count, 1000):
            out.write(
                b"".join(empty_file_header(f"{prefix}{j}") for j in range(i, min(count, i + 1000)))
            )
        out.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
    return path


_TEMPLATE = tarfile.TarInfo("x").tobuf(format=tarfile.DEFAULT_FORMAT)
