"""What kind of archive a job's bundle is, from its first bytes (master and worker agree)."""

from __future__ import annotations

KINDS = ("tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst", "zip")
HEAD = 512  # bytes `kind` looks at


def kind(head: bytes) -> str | None:
    """The archive kind from its first `HEAD` bytes (or fewer); None if not one we unpack."""
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "tar.zst"
    if head.startswith(b"BZh"):
        return "tar.bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None
