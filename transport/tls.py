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

import contextlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ALPN_CHANNEL = "corral/3"
ALPN_ENROLL = "corral-enroll/3"
TLS_HANDSHAKE_TIMEOUT = 5.0
RENEW_AT = 2 / 3  # of a certificate's lifetime: when its node asks for a new one


class TlsError(Exception):
    """A certificate, key or CA file is missing, unreadable or wrong; the message says which."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key: small certificates, fast handshakes."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def csr_der(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A certificate signing request for node ``name`` (CN), signed by ``key``."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def der_to_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def renew_time(cert: x509.Certificate) -> float:
    """When a node should ask for a new certificate: two thirds into this one's life."""
    begin = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    return begin + RENEW_AT * (end - begin)


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
    """A node's key, certificate and CA certificate, in ``ROOT/tls/``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = directory / "node.key"
        self.cert = directory / "node.crt"
        self.ca = directory / "ca.crt"

    def enrolled_as(self) -> str | None:
        """The node name this node holds a certificate for; None if it has none."""
        if not (self.key.exists() and self.cert.exists() and self.ca.exists()):
            return None
        try:
            return common_name(self.certificate())
        except (OSError, ValueError):
            return None

    def usable_for(self, name: str, now: float) -> bool:
        """True if this node holds a certificate for ``name`` that has not expired at ``now``."""
        if self.enrolled_as() != name:
            return False
        try:
            return now < self.certificate().not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            return False

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def load_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{self.key} is not an EC key")
        return key

    def new_key(self) -> ec.EllipticCurvePrivateKey:
        """A fresh key, written (0600) beside the certificate it will have."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = new_key()
        write_private(self.key.with_name("node.key.new"), key_pem(key))
        return key

    def store(self, cert_der: bytes, ca_der: bytes | None = None) -> None:
        """Keep the certificate issued for the key `new_key` made (and the CA's, if given)."""
        if ca_der is not None:
            write_private(self.ca, der_to_pem(ca_der), 0o644)
        pending = self.key.with_name("node.key.new")
        if pending.exists():
            pending.replace(self.key)
        write_private(self.cert, der_to_pem(cert_der), 0o644)

    def context(self) -> ssl.SSLContext:
        """The TLS context to dial the master with this node's certificate."""
        try:
            return client_context(self.cert, self.key, self.ca)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot use the certificate in {self.dir}: {e}") from None
