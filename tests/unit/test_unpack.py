"""The bundle unpacker (`daemon.unpack`) against good bundles and each attack, on a real disk.

Each attack is unpacked into a fresh directory inside a sandbox directory;
after a refusal the sandbox holds nothing but that directory's tree (no
file lands beside it, nothing outside), and the message names the member.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from corral.daemon import bundles, unpack
from corral.daemon.errors import Refusal
from corral.daemon.unpack import Limits, UnpackError
from tests.archives import empty_files_tgz

pytestmark = pytest.mark.timeout(60)

Adder = Callable[[tarfile.TarFile], None]
DEFAULT = Limits()


def tar_gz(path: Path, *adders: Adder, compress: str = "gz") -> Path:
    mode = "w:gz" if compress == "gz" else "w"
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for add in adders:
            add(tf)
    return path


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> Adder:
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
        tf.addfile(info, io.BytesIO(data))

    return add


def special(name: str, kind: bytes, linkname: str = "") -> Adder:
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        if kind == tarfile.DIRTYPE:
            info.mode = 0o755
        tf.addfile(info)

    return add


def run(archive: Path, sandbox: Path, limits: Limits = DEFAULT) -> Path:
    dest = sandbox / "work"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        unpack.unpack(archive, fd, limits)
    finally:
        os.close(fd)
    return dest


def refused(archive: Path, tmp_path: Path, limits: Limits = DEFAULT) -> str:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    with pytest.raises(UnpackError) as e:
        run(archive, sandbox, limits)
    assert sorted(p.name for p in sandbox.iterdir()) == ["work"]  # nothing beside it
    message = str(e.value)
    assert "\n" not in message
    return message


def test_a_good_tar_gz_unpacks_with_its_tree_modes_links_and_mtimes(tmp_path: Path) -> None:
    archive = tar_gz(
        tmp_path / "a.tgz",
        special("src", tarfile.DIRTYPE),
        reg("src/main.c", b"int main(){return 0;}\n"),
        reg("run.sh", b"#!/bin/sh\necho hi\n", 0o4777),
        special("latest", tarfile.SYMTYPE, "src/main.c"),
        special("copy.c", tarfile.LNKTYPE, "src/main.c"),
        reg("./deep/er/file.txt", b"deep"),
    )
    dest = run(archive, tmp_path)
    assert (dest / "src/main.c").read_bytes() == b"int main(){return 0;}\n"
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755  # no set-uid, no o+w
    assert os.readlink(dest / "latest") == "src/main.c"
    assert (dest / "copy.c").stat().st_ino == (dest / "src/main.c").stat().st_ino
    assert (dest / "deep/er/file.txt").read_text() == "deep"
    assert int((dest / "src/main.c").stat().st_mtime) == 1_700_000_000


def test_zip_plain_tar_and_zstd_unpack_too(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dir/a.txt", "zipped")
    assert (run(z, tmp_path / "z") / "dir/a.txt").read_text() == "zipped"
    plain = tar_gz(tmp_path / "a.tar", reg("p.txt", b"plain"), compress="none")
    assert (run(plain, tmp_path / "p") / "p.txt").read_bytes() == b"plain"
    zst = tmp_path / "a.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    assert (run(zst, tmp_path / "s") / "p.txt").read_bytes() == b"plain"


@pytest.fixture(autouse=True)
def _sandboxes(tmp_path: Path) -> None:
    for name in ("z", "p", "s"):
        (tmp_path / name).mkdir()


@pytest.mark.parametrize(
    ("adders", "member", "why"),
    [
        ([reg("../evil")], "../evil", "'..'"),
        ([reg("ok/../../evil")], "ok/../../evil", "'..'"),
        ([reg("/etc/x")], "/etc/x", "absolute"),
        ([special("d", tarfile.SYMTYPE, "/tmp"), reg("d/x")], "d", "absolute"),
        ([special("d", tarfile.SYMTYPE, "../.."), reg("d/x")], "d", "outside"),
        ([special("pw", tarfile.LNKTYPE, "/etc/passwd")], "pw", "absolute"),
        ([special("pw", tarfile.LNKTYPE, "../../etc/passwd")], "pw", "outside"),
        ([special("null", tarfile.CHRTYPE)], "null", "device"),
        ([special("sda", tarfile.BLKTYPE)], "sda", "device"),
        ([special("fifo", tarfile.FIFOTYPE)], "fifo", "FIFO"),
        ([special("in", tarfile.SYMTYPE, "sub"), reg("in/x")], "in/x", "symlink"),
        ([reg("f"), special("h", tarfile.LNKTYPE, "nothere")], "h", "not a file"),
    ],
)
def test_each_attack_is_refused_naming_its_member(
    tmp_path: Path, adders: list[Adder], member: str, why: str
) -> None:
    (tmp_path / "a").mkdir()
    archive = tar_gz(tmp_path / "a" / "bad.tgz", special("sub", tarfile.DIRTYPE), *adders)
    message = refused(archive, tmp_path)
    assert f"member {member!r}" in message and why in message, message


def test_a_symlink_swapped_in_on_disk_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "a").mkdir()
    archive = tar_gz(tmp_path / "a" / "b.tgz", reg("d/x"))
    sandbox = tmp_path / "sandbox"
    (sandbox / "work").mkdir(parents=True)
    (sandbox / "work" / "d").symlink_to(outside)
    fd = os.open(sandbox / "work", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(UnpackError, match=r"member 'd/x': .*(outside|goes through 'd')"):
            unpack.unpack(archive, fd, Limits())
    finally:
        os.close(fd)
    assert list(outside.iterdir()) == []


def test_too_many_members_stop_at_the_limit(tmp_path: Path) -> None:
    archive = empty_files_tgz(tmp_path / "many.tgz", 100_000)
    message = refused(archive, tmp_path)
    assert "member 'f10000': more than 10000 members" in message
    assert len(list((tmp_path / "sandbox" / "work").iterdir())) == 10_000


def bomb_header(path: Path, size: int) -> Path:
    """A 1 KB tar.gz whose one member declares ``size`` bytes of zeros (cut short)."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    head = info.tobuf(format=tarfile.GNU_FORMAT)
    path.write_bytes(gzip.compress(head + bytes(64 * 1024)))
    return path


def test_a_small_archive_that_unpacks_to_10_gb_is_refused_before_writing(tmp_path: Path) -> None:
    archive = bomb_header(tmp_path / "bomb.tgz", 10 << 30)
    assert archive.stat().st_size < 1024
    message = refused(archive, tmp_path)
    assert "member 'zeros': unpacks past 2.0 GiB" in message, message
    assert list((tmp_path / "sandbox" / "work").iterdir()) == []


def test_real_zeros_past_the_byte_limit_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    archive = tar_gz(tmp_path / "a" / "z.tgz", reg("a", bytes(3 << 20)), reg("b", bytes(3 << 20)))
    message = refused(archive, tmp_path, Limits(bytes=4 << 20))
    assert "member 'b': unpacks past 4.0 MiB" in message, message
    work = tmp_path / "sandbox" / "work"
    assert sum(p.stat().st_size for p in work.iterdir()) <= 4 << 20


def test_a_zip_symlink_or_escape_is_refused(tmp_path: Path) -> None:
    z = tmp_path / "z" / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    assert "member 'link': a symlink in a zip" in refused(z, tmp_path)
    z2 = tmp_path / "p" / "bad.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        zf.writestr("../evil", "x")
    sandbox = tmp_path / "s" / "x"
    sandbox.mkdir()
    with pytest.raises(UnpackError, match=r"'\.\.' leads out"):
        run(z2, sandbox)


def test_not_an_archive_and_a_damaged_one_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world" * 100)
    assert "not a tar" in refused(junk, tmp_path)
    cut = tmp_path / "cut.tgz"
    (tmp_path / "a").mkdir()
    whole = tar_gz(tmp_path / "a" / "w.tgz", reg("a", os.urandom(100_000))).read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    sandbox = tmp_path / "s" / "y"
    sandbox.mkdir()
    with pytest.raises(UnpackError, match="damaged"):
        run(cut, sandbox)


def test_unpack_into_renames_into_place_or_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bundles").mkdir(parents=True)
    (root / "apps" / "app").mkdir(parents=True)
    good = tar_gz(tmp_path / "good.tgz", reg("Makefile", b"run:\n\techo ok\n"))
    bad = tar_gz(tmp_path / "bad.tgz", reg("fine"), reg("../evil"))
    shas = {}
    for archive in (good, bad):
        import hashlib

        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        (root / "bundles" / sha).write_bytes(archive.read_bytes())
        shas[archive.name] = sha
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        good_sha = shas["good.tgz"]
        done = bundles.unpack_into(fd, "app", ("jobs", "1", "0"), good_sha, Limits(), "k1")
        assert done.files == 1
        assert (root / "apps/app/jobs/1/0/Makefile").exists()
        again = bundles.unpack_into(fd, "app", ("jobs", "1", "0"), good_sha, Limits(), "k1")
        assert again.files == 0  # the same replica asked again: left as it is
        with pytest.raises(Refusal, match="from another job"):  # a stale one: never unpacked over
            bundles.unpack_into(fd, "app", ("jobs", "1", "0"), good_sha, Limits(), "k2")
        with pytest.raises(UnpackError, match=r"'\.\./evil'"):
            bundles.unpack_into(fd, "app", ("jobs", "2", "0"), shas["bad.tgz"], Limits())
        assert os.listdir(root / "apps/app/jobs/2") == []  # no workdir, no half-unpacked one
        assert not (root / "apps/app/jobs/evil").exists()
        assert bundles.purge(fd, "app", ("jobs", "1", "0"))
        assert not (root / "apps/app/jobs/1").exists()
        os.utime(root / "bundles" / good_sha, (1, 1))
        assert bundles.sweep(fd, bundles.KEEP, time.time()) == [good_sha]
        assert sorted(os.listdir(root / "bundles")) == [shas["bad.tgz"]]
    finally:
        os.close(fd)
