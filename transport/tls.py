"""TLS on the worker channel: contexts, a node's key and certificate files, CSRs.

The channel is TLS 1.3 with certificates on both sides, from the master's
private CA (`corral.master.ca`).  Both kinds of connection come to the one
worker port, told apart in the TLS handshake itself:

- a worker with a certificate presents it; the master's TLS layer checks it
  against the CA before any byte of corral's protocol is read;
- a worker without one (its first start) offers the ALPN protocol
  `ALPN_ENROLL` and no certificate.  Such a connection can only enroll:
  prove it holds the cluster token, send a CSR for a key it generated, get
  a certificate back, and be closed.  A connection with neither a
  certificate nor that ALPN offer is closed before any frame is read.

A node keeps its files in ``ROOT/tls/`` (`NodeFiles`): ``node.key``
(0600, made on the node and never sent), ``node.crt`` and ``ca.crt``.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

ALPN_CHANNEL = "corral/3"
ALPN_ENROLL = "corral-enroll/3"
TLS_HANDSHAKE_TIMEOUT = 5.0
RENEW_AT = 2 / 3  # of a certificate's lifetime: when its node asks for a new one


class TlsError(Exception):
    """A certificate, key or CA file is missing, unreadable or wrong; the message says which."""


def der_to_pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode()


# --- reading a certificate without `cryptography` ----------------------------------
# The worker needs three facts of its own certificate: the name it is for and
# when it starts and stops being valid.  `cryptography` would read them but
# costs the daemon ~10 MiB of memory for the rest of its life (the worker's
# RSS budget is 40 MiB), so this reads just those fields of the DER (X.509:
# RFC 5280 4.1); the certificate is one our CA made, checked by the token
# proof that brought it.
_CN = bytes.fromhex("0603550403")  # OID 2.5.4.3, commonName, as DER
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


@dataclass(frozen=True)
class CertInfo:
    """What a node needs to know of its certificate."""

    name: str  # the subject's CN
    not_before: float  # Unix time
    not_after: float

    @property
    def renew_at(self) -> float:
        """When a node should ask for a new certificate: two thirds into this one's life."""
        return self.not_before + RENEW_AT * (self.not_after - self.not_before)


def _tlv(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, body start, body end) of the DER element at ``pos``; ValueError if malformed."""
    if pos + 2 > end:
        raise ValueError("truncated certificate")
    tag, size = der[pos], der[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 0 < count <= 4 or pos + count > end:
            raise ValueError("bad length in certificate")
        size = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + size > end:
        raise ValueError("truncated certificate")
    return tag, pos, pos + size


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        tag, body, start = _tlv(der, start, end)
        found.append((tag, body, start))
    return found


def _time(tag: int, text: bytes) -> float:
    """A UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ)."""
    digits = text.decode("ascii").removesuffix("Z")
    if tag == 0x17:
        year = int(digits[:2])
        digits = str(year + (1900 if year >= 50 else 2000)) + digits[2:]
    elif tag != 0x18:
        raise ValueError("bad time in certificate")
    if len(digits) != 14 or not digits.isdigit():
        raise ValueError("bad time in certificate")
    parts = [int(digits[:4])] + [int(digits[i : i + 2]) for i in range(4, 14, 2)]
    return float(calendar.timegm((*parts, 0, 0, 0)))


def _common_name(der: bytes, start: int, end: int) -> str:
    for _, set_start, set_end in _children(der, start, end):  # RDNs: SETs
        for _, pair, pair_end in _children(der, set_start, set_end):  # SEQUENCE {OID, value}
            _, _, oid_end = _tlv(der, pair, pair_end)
            if der[pair:oid_end] != _CN:
                continue
            tag, body, body_end = _tlv(der, oid_end, pair_end)
            return der[body:body_end].decode(_STRINGS.get(tag, "latin-1"), errors="replace")
    return ""


def cert_info(der: bytes) -> CertInfo:
    """The subject CN and validity of a certificate (DER); ValueError if it is not one."""
    try:
        _, body, end = _tlv(der, 0, len(der))  # Certificate
        _, body, end = _tlv(der, body, end)  # tbsCertificate
        fields = _children(der, body, end)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject, ...
        validity, subject = fields[3], fields[4]
        (t1, b1, e1), (t2, b2, e2) = _children(der, validity[1], validity[2])
        begin, until = _time(t1, der[b1:e1]), _time(t2, der[b2:e2])
        return CertInfo(_common_name(der, subject[1], subject[2]), begin, until)
    except (IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"not a certificate: {e}") from None


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step, the new file made with ``mode``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _tls13(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The master's side: its serving certificate; a client certificate from ``ca`` if any.

    ``CERT_OPTIONAL``: a client certificate, when presented, must chain to
    the CA or the handshake fails; a connection without one is let through
    the TLS layer and told apart by the master (only enrollment is open to it).
    """
    ctx = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols([ALPN_CHANNEL, ALPN_ENROLL])
    # No session tickets: asyncio's streams cannot resume a session, so
    # tickets would cost every handshake their encryption and a round of bytes.
    ctx.num_tickets = 0
    return ctx


def api_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The HTTP API's side: the master's serving certificate, no client certificate."""
    ctx = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cert, key)
    return ctx


def enroll_context() -> ssl.SSLContext:
    """A worker enrolling: no certificate yet, and no CA to check the master's against.

    The master is authenticated one level up instead: its reply proves,
    with the cluster token, the CA certificate and the node certificate it
    carries (`corral.transport.handshake.enroll`).
    """
    ctx = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([ALPN_ENROLL])
    return ctx


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A worker with its certificate: the master's must chain to ``ca`` and name its address."""
    ctx = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols([ALPN_CHANNEL])
    return ctx


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a TLS connection, as its (verified) certificate says."""

    name: str  # the certificate's CN
    serial: int
    not_after: str  # as OpenSSL prints it


def peer_of(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Peer | None:
    """The verified client certificate of a connection; None if it presented none."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    name = ""
    for rdn in cert.get("subject", ()):
        for pair in rdn:
            if pair[0] == "commonName":
                name = str(pair[1])
    serial = int(str(cert.get("serialNumber", "0")), 16)
    return Peer(name, serial, str(cert.get("notAfter", "")))


class NodeFiles:
    """A node's key, certificate and CA certificate, in ``ROOT/tls/``.

    The key is made (and a CSR over it) by ``python -m corral.daemon.keygen``:
    ``node.key.new`` until the certificate for it arrives (`store`).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = directory / "node.key"
        self.pending_key = directory / "node.key.new"
        self.cert = directory / "node.crt"
        self.ca = directory / "ca.crt"

    def info(self) -> CertInfo:
        """The node certificate's name and validity; OSError or ValueError if unusable."""
        try:
            der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.cert}: {e}") from None
        return cert_info(der)

    def enrolled_as(self) -> str | None:
        """The node name this node holds a certificate for; None if it has none."""
        if not (self.key.exists() and self.cert.exists() and self.ca.exists()):
            return None
        try:
            return self.info().name
        except (OSError, ValueError):
            return None

    def usable_for(self, name: str, now: float) -> bool:
        """True if this node holds a certificate for ``name`` that has not expired at ``now``."""
        if self.enrolled_as() != name:
            return False
        try:
            return now < self.info().not_after
        except (OSError, ValueError):
            return False

    def store(self, cert_der: bytes, ca_der: bytes | None = None) -> CertInfo:
        """Keep the certificate issued for the key keygen made (and the CA's, if given).

        ValueError (and nothing written) if ``cert_der`` is not a certificate.
        """
        info = cert_info(cert_der)
        pem = der_to_pem(cert_der)
        if ca_der is not None:
            write_private(self.ca, der_to_pem(ca_der), 0o644)
        if self.pending_key.exists():
            self.pending_key.replace(self.key)
        write_private(self.cert, pem, 0o644)
        return info

    def context(self) -> ssl.SSLContext:
        """The TLS context to dial the master with this node's certificate."""
        try:
            return client_context(self.cert, self.key, self.ca)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot use the certificate in {self.dir}: {e}") from None
