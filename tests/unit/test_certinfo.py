"""`tls.cert_info`: the worker reads its certificate's name and validity without `cryptography`.

Checked against certificates `cryptography` makes (the CA's own code and
odd ones: a UTF-8 name, dates past 2049 in GeneralizedTime), and against
garbage, which must raise ValueError and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from corral.master.ca import CA
from corral.transport import keys, tls

pytestmark = pytest.mark.timeout(30)


def make_cert(
    cn: str, begin: datetime.datetime, end: datetime.datetime, version: bool = True
) -> bytes:
    key = keys.new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corral"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_node_certificate_of_the_ca_reads_as_cryptography_reads_it(tmp_path: Path) -> None:
    ca = CA(tmp_path / "ca", clock=lambda: 1_800_000_000.0).open()
    der = ca.sign_node("node-7", keys.csr_der(keys.new_key(), "node-7"))
    cert = x509.load_der_x509_certificate(der)
    info = tls.cert_info(der)
    assert info.name == "node-7"
    assert info.not_before == cert.not_valid_before_utc.timestamp()
    assert info.not_after == cert.not_valid_after_utc.timestamp()


def test_generalized_time_and_a_utf8_name() -> None:
    utc = datetime.UTC
    begin = datetime.datetime(2049, 12, 31, 23, 59, 58, tzinfo=utc)
    end = datetime.datetime(2071, 2, 3, 4, 5, 6, tzinfo=utc)  # GeneralizedTime from 2050
    info = tls.cert_info(make_cert("nœud-é", begin, end))
    assert info == tls.CertInfo("nœud-é", begin.timestamp(), end.timestamp())
    assert info.renew_at == pytest.approx(begin.timestamp() + (end - begin).total_seconds() * 2 / 3)


def test_node_files_read_their_certificate(tmp_path: Path) -> None:
    ca = CA(tmp_path / "ca").open()
    files = tls.NodeFiles(tmp_path / "node")
    files.dir.mkdir()
    files.pending_key.write_bytes(keys.key_pem(keys.new_key()))
    info = files.store(
        ca.sign_node("n1", keys.csr_der(keys.load_key(files.pending_key), "n1")), ca.cert_der
    )
    assert files.key.exists() and not files.pending_key.exists()
    assert files.info() == info and files.enrolled_as() == "n1"
    assert files.usable_for("n1", info.not_after - 1)
    assert not files.usable_for("n1", info.not_after)
    assert not files.usable_for("n2", info.not_after - 1)


def test_store_refuses_what_is_not_a_certificate_and_writes_nothing(tmp_path: Path) -> None:
    files = tls.NodeFiles(tmp_path / "node")
    files.dir.mkdir()
    with pytest.raises(ValueError):
        files.store(b"\x30\x03\x02\x01\x01", b"ca")
    assert list(files.dir.iterdir()) == []


def test_garbage_raises_value_error_only() -> None:
    utc = datetime.UTC
    good = make_cert(
        "n1", datetime.datetime(2030, 1, 1, tzinfo=utc), datetime.datetime(2031, 1, 1, tzinfo=utc)
    )
    rng = random.Random(13)
    samples = [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80", good[:40], good[:-1]]
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        samples.append(bytes(data))
    samples += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))) for _ in range(500)]
    for data in samples:
        with contextlib.suppress(ValueError):
            tls.cert_info(data)
