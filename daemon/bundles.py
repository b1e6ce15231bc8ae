"""A job's bundles on this node: ``ROOT/bundles/SHA256``, one file per content.

The master sends a bundle once per node: it asks whether the node holds
its sha256 (`have`); if not, it writes it over SFTP into
``ROOT/bundles/incoming/SHA256`` (under a temporary name, renamed into
place) and asks the worker to `commit` it, which hashes what arrived and
moves it to ``ROOT/bundles/SHA256`` only if the hash is the one named.
A file there has therefore been checked; the next job with that bundle
sends nothing.

`unpack_into` unpacks one into a replica's working directory
``ROOT/apps/APP/jobs/ID/INDEX``: into a fresh hidden directory beside it,
renamed into place once every member passed (see `daemon.unpack`), so a
refused bundle leaves no working directory at all and nothing outside it.
A working directory already there is left as it is when it was unpacked
for the same replica (its launch key, asked again after a master restart;
``jobs/ID/.INDEX.bundle`` says), and refused otherwise (a job of another
master's: never unpacked over).  A bundle not used for `KEEP` seconds is
removed (`sweep`, after each one received).  Blocking functions: run them
in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
import time

from corral.daemon import beneath, jobs, unpack
from corral.daemon.beneath import APPS
from corral.daemon.errors import Refusal
from corral.transport.messages import UPLOAD_MARK

BUNDLES = "bundles"
INCOMING = "incoming"
_SHA = re.compile(r"[0-9a-f]{64}")
KEEP = 7 * 86400.0  # a bundle not received nor unpacked for a week goes


def check_sha(sha: str) -> str:
    if not _SHA.fullmatch(sha):
        raise Refusal(f"bad bundle id {sha[:80]!r}: expected a sha256 in hex")
    return sha


def have(root_fd: int, root: str, sha: str, idle: float = 0.0) -> tuple[bool, str, list[str]]:
    """Whether ``ROOT/bundles/SHA`` is here, where an SFTP upload of it goes,
    and the dead uploads removed from ``incoming/`` (see `sweep_incoming`)."""
    check_sha(sha)
    fd = beneath.open_dir(root_fd, (BUNDLES, INCOMING), create=True, mode=0o700)
    try:
        swept = sweep_incoming(fd, idle, time.time()) if idle > 0 else []
    finally:
        os.close(fd)
    try:
        st = os.stat(f"{BUNDLES}/{sha}", dir_fd=root_fd, follow_symlinks=False)
        present = stat.S_ISREG(st.st_mode)
    except FileNotFoundError:
        present = False
    return present, f"{root}/{BUNDLES}/{INCOMING}/{sha}", swept


def sweep_incoming(idir: int, idle: float, now: float) -> list[str]:
    """Remove what sends that died left in ``incoming/``: a partial upload
    (named with `UPLOAD_MARK`) or one whole but never committed, with no write
    for ``idle`` seconds (a send in progress writes all the time; a stalled
    one gives up).  Their names with their sizes."""
    gone = []
    with os.scandir(idir) as entries:
        for e in entries:
            if UPLOAD_MARK not in e.name and not _SHA.fullmatch(e.name):
                continue
            try:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= idle:
                    os.unlink(e.name, dir_fd=idir)
                    gone.append(f"{e.name} ({st.st_size} bytes)")
            except OSError:
                continue
    return gone


def commit(root_fd: int, root: str, sha: str) -> str:
    """Check what arrived in ``incoming/SHA`` and keep it as ``bundles/SHA``; its path."""
    check_sha(sha)
    bdir = beneath.open_dir(root_fd, (BUNDLES,))
    try:
        idir = beneath.open_dir(bdir, (INCOMING,), where=(BUNDLES,))
        try:
            try:
                fd = os.open(sha, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=idir)
            except FileNotFoundError:
                raise Refusal(f"bundle {sha[:12]} did not arrive") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise Refusal(f"bundle {sha[:12]}: not a regular file")
                h = hashlib.sha256()
                while block := os.read(fd, 1 << 20):
                    h.update(block)
            finally:
                os.close(fd)
            got = h.hexdigest()
            if got != sha:
                os.unlink(sha, dir_fd=idir)
                raise Refusal(f"bundle {sha[:12]} arrived as {got[:12]} (damaged): not kept")
            os.rename(sha, sha, src_dir_fd=idir, dst_dir_fd=bdir)
        finally:
            os.close(idir)
    finally:
        os.close(bdir)
    return f"{root}/{BUNDLES}/{sha}"


def unpack_into(
    root_fd: int,
    app: str,
    workdir: tuple[str, ...],
    sha: str,
    limits: unpack.Limits,
    key: str = "",
) -> unpack.Unpacked:
    """Unpack bundle ``sha`` as the working directory ``workdir`` of ``app`` (see the module)."""
    check_sha(sha)
    try:
        bfd = os.open(
            f"{BUNDLES}/{sha}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd
        )
    except FileNotFoundError:
        raise Refusal(f"bundle {sha[:12]} is not on this node") from None
    try:
        parent = beneath.open_dir(
            root_fd, (APPS, app, *workdir[:-1]), create=True, mode=jobs.WORKDIR_MODE
        )
        try:
            leaf = workdir[-1]
            marker = f".{leaf}.bundle"  # "SHA KEY" of what was unpacked there
            try:
                os.lstat(leaf, dir_fd=parent)
            except FileNotFoundError:
                pass
            else:
                if key and _read_marker(parent, marker) == f"{sha} {key}":
                    return unpack.Unpacked(0, 0)  # unpacked before: the launch is asked again
                raise Refusal(
                    f"{beneath.rel(APPS, app, *workdir)} is there already, from another job "
                    "(a master with another state directory?): not unpacked over it"
                )
            tmp = f".{leaf}.unpacking-{secrets.token_hex(4)}"
            os.mkdir(tmp, jobs.WORKDIR_MODE, dir_fd=parent)
            try:
                dest = os.open(tmp, beneath.DIR_FLAGS, dir_fd=parent)
                try:
                    done = unpack.unpack(f"/proc/self/fd/{bfd}", dest, limits)
                finally:
                    os.close(dest)
                os.rename(tmp, leaf, src_dir_fd=parent, dst_dir_fd=parent)
                beneath.write_atomic(parent, marker, f"{sha} {key}".encode())
                os.utime(bfd)  # its last use, for `sweep`
            except BaseException:
                beneath.remove(parent, tmp)
                raise
            return done
        finally:
            os.close(parent)
    finally:
        os.close(bfd)


def _read_marker(dir_fd: int, name: str) -> str:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return ""
    try:
        return os.read(fd, 256).decode(errors="replace")
    finally:
        os.close(fd)


def sweep(root_fd: int, keep: float, now: float) -> list[str]:
    """Remove bundles not used (received or unpacked) for ``keep`` seconds; their names."""
    try:
        bdir = beneath.open_dir(root_fd, (BUNDLES,))
    except (FileNotFoundError, Refusal):
        return []
    gone = []
    try:
        with os.scandir(bdir) as entries:
            for e in entries:
                if not _SHA.fullmatch(e.name):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and now - st.st_mtime > keep:
                        os.unlink(e.name, dir_fd=bdir)
                        gone.append(e.name)
                except OSError:
                    continue
    finally:
        os.close(bdir)
    return gone


def purge(root_fd: int, app: str, workdir: tuple[str, ...]) -> bool:
    """Remove a replica's working directory (and its job's, once empty); False if none."""
    try:
        parent = beneath.open_dir(root_fd, (APPS, app, *workdir[:-1]))
    except FileNotFoundError:
        return False
    try:
        gone = beneath.remove(parent, workdir[-1])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f".{workdir[-1]}.bundle", dir_fd=parent)
    finally:
        os.close(parent)
    if len(workdir) > 1:
        try:
            up = beneath.open_dir(root_fd, (APPS, app, *workdir[:-2]))
        except FileNotFoundError:
            return gone
        try:
            os.rmdir(workdir[-2], dir_fd=up)
        except OSError:
            pass  # other replicas' directories are still there
        finally:
            os.close(up)
    return gone
