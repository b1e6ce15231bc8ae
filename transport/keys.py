"""A node's key and certificate signing request: the part of TLS that needs `cryptography`.

Kept apart from `corral.transport.tls` because importing `cryptography`
costs a process about 10 MiB of memory for good.  The master (which signs)
and the benchmarks' simulated workers import it; the worker daemon never
does: it makes a key and a CSR in a short-lived child
(``python -m corral.daemon.keygen``) and reads its certificate with
`corral.transport.tls.cert_info`.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key: small certificates, fast handshakes."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The EC key in ``path`` (PEM); ValueError if it is not one, OSError if unreadable."""
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC key")
    return key


def csr_der(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A certificate signing request for node ``name`` (CN), signed by ``key``."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)
