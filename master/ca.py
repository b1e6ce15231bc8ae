"""The master's private CA, its serving certificate, and the record of enrolled nodes.

In ``STATE_DIR/tls/``, made on first start:

- ``ca.key`` (0600) and ``ca.crt``: an EC P-256 CA, ten years;
- ``server.key`` (0600) and ``server.crt``: the master's serving
  certificate, made afresh at every start for the addresses workers dial
  (IP SANs for IPs, DNS SANs for names; for a wildcard listen address,
  every address of the machine, its hostname, ``localhost``);
- ``nodes.json``: each enrolled node's certificates (serial, expiry), and
  the serials revoked.

Node certificates name the node (CN and a DNS SAN), are for client
authentication only, last `NODE_LIFETIME` and start `BACKDATE` in the
past, so a node whose clock is a few minutes off can use one at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.transport.addresses import WILDCARDS
from corral.transport.keys import key_pem, new_key
from corral.transport.tls import api_context, cert_info, server_context, write_private

NODE_LIFETIME = 90 * 86400.0
CA_LIFETIME = 10 * 365 * 86400.0
BACKDATE = 300.0  # seconds before now that a certificate becomes valid: clock skew

Clock = Callable[[], float]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _when(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


def machine_names() -> list[str]:
    """This machine's addresses and names, for a master listening on every address."""
    import psutil

    found = ["127.0.0.1", "::1", "localhost", socket.gethostname(), socket.getfqdn()]
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                found.append(a.address.split("%")[0])
    return list(dict.fromkeys(n for n in found if n))


def serving_names(hosts: Iterable[str]) -> list[str]:
    """The SANs for a master that listens on ``hosts``."""
    names: list[str] = []
    for host in hosts:
        names += machine_names() if host in WILDCARDS else [host]
    if any(n in ("127.0.0.1", "::1", "localhost") for n in names):
        names += ["127.0.0.1", "localhost"]
    return list(dict.fromkeys(names))


def _sans(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


class CA:
    """The CA in ``directory``: signs node and serving certificates, keeps the node record."""

    def __init__(self, directory: Path, clock: Clock = time.time) -> None:
        self.dir = directory
        self.clock = clock
        self.key_path = directory / "ca.key"
        self.cert_path = directory / "ca.crt"
        self.server_key = directory / "server.key"
        self.server_cert = directory / "server.crt"
        self.record_path = directory / "nodes.json"
        self.key: ec.EllipticCurvePrivateKey
        self.cert: x509.Certificate
        self.cert_der = b""
        self.nodes: dict[str, dict[str, Any]] = {}  # name -> {"certs": [[serial, not_after]]}
        self.revoked: set[int] = set()
        self.server_names: list[str] = []
        self.server_renew_at = 0.0
        self.contexts: list[ssl.SSLContext] = []  # serving with the serving certificate

    # --- files ----------------------------------------------------------
    def open(self) -> CA:
        """Load the CA, making it first if there is none; OSError/ValueError if unusable."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.key_path.exists():
            self._create()
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path} is not an EC key")
        self.key = key
        self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self._load_record()
        return self

    def _create(self) -> None:
        key = new_key()
        now = self.clock()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("corral cluster CA"))
            .issuer_name(_name("corral cluster CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - BACKDATE))
            .not_valid_after(_when(now + CA_LIFETIME))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        write_private(self.key_path, key_pem(key))  # last: its presence means the CA is whole

    def _load_record(self) -> None:
        try:
            data = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return
        self.nodes = {str(k): v for k, v in data.get("nodes", {}).items()}
        self.revoked = {int(s) for s in data.get("revoked", [])}

    def _save_record(self) -> None:
        data = {"nodes": self.nodes, "revoked": sorted(self.revoked)}
        # Written whole at every enrollment: msgspec's encoder, 2 ms at 2,000 nodes
        # where json's with indent took 110 ms (a fifth of the master's CPU
        # while 2,000 workers enrolled).
        write_private(self.record_path, msgspec.json.encode(data))

    # --- signing --------------------------------------------------------
    def _issue(
        self,
        subject: str,
        public_key: Any,
        names: Iterable[str],
        usage: x509.ObjectIdentifier,
        lifetime: float,
    ) -> x509.Certificate:
        now = self.clock()
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - BACKDATE))
            .not_valid_after(_when(now + lifetime))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(_sans(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def sign_node(self, name: str, csr: bytes, lifetime: float = NODE_LIFETIME) -> bytes:
        """A certificate (DER) for node ``name`` over the CSR's key; recorded.

        ValueError if the CSR is malformed, badly signed, or not an EC/RSA key.
        """
        try:
            req = x509.load_der_x509_csr(csr)
        except ValueError:
            raise ValueError("malformed CSR") from None
        if not req.is_signature_valid:
            raise ValueError("the CSR's signature does not check out")
        public = req.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("the CSR's key is not an EC key")
        cert = self._issue(name, public, [name], ExtendedKeyUsageOID.CLIENT_AUTH, lifetime)
        entry = self.nodes.setdefault(name, {"certs": []})
        entry["certs"] = [
            c for c in entry["certs"] if c[1] > self.clock()
        ]  # expired ones need no record
        entry["certs"].append([cert.serial_number, cert.not_valid_after_utc.timestamp()])
        self._save_record()
        return cert.public_bytes(serialization.Encoding.DER)

    def write_server_cert(self, names: Iterable[str]) -> None:
        """A serving certificate for ``names`` (addresses and host names), written beside the CA."""
        key = new_key()
        names = list(names)
        cert = self._issue(
            "corral master",
            key.public_key(),
            names,
            ExtendedKeyUsageOID.SERVER_AUTH,
            NODE_LIFETIME,
        )
        write_private(self.server_key, key_pem(key))
        write_private(self.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self.server_names = names
        self.server_renew_at = cert_info(cert.public_bytes(serialization.Encoding.DER)).renew_at

    def refresh_server_cert(self) -> bool:
        """Past two thirds of its life, a new serving certificate, loaded where it serves.

        A master that runs for months keeps serving: handshakes from then on
        (worker port and API alike) get the new certificate, connections
        already up keep theirs.
        """
        if not self.server_names or self.clock() < self.server_renew_at:
            return False
        self.write_server_cert(self.server_names)
        for ctx in self.contexts:
            ctx.load_cert_chain(self.server_cert, self.server_key)
        return True

    def channel_context(self) -> ssl.SSLContext:
        """The worker port's TLS; a renewed serving certificate is loaded into it."""
        ctx = server_context(self.server_cert, self.server_key, self.cert_path)
        self.contexts.append(ctx)
        return ctx

    def api_context(self) -> ssl.SSLContext:
        """The HTTP API's TLS (off loopback); a renewed serving certificate is loaded into it."""
        ctx = api_context(self.server_cert, self.server_key)
        self.contexts.append(ctx)
        return ctx

    # --- the record -----------------------------------------------------
    def allowed(self, name: str, serial: int) -> str | None:
        """Why a certificate (``name``, ``serial``) is refused; None if it may connect."""
        if serial in self.revoked:
            return f"certificate of {name} (serial {serial:x}) is revoked"
        if not any(c[0] == serial for c in self.nodes.get(name, {}).get("certs", [])):
            return f"certificate of {name} (serial {serial:x}) is not enrolled"
        return None

    def expires(self, name: str) -> float | None:
        """When the newest certificate of ``name`` expires (Unix time); None if not enrolled."""
        certs = self.nodes.get(name, {}).get("certs", [])
        return max(float(c[1]) for c in certs) if certs else None

    def revoke(self, name: str) -> int:
        """Refuse every certificate of ``name`` from now on; how many there were."""
        entry = self.nodes.pop(name, None)
        certs = entry["certs"] if entry else []
        self.revoked.update(int(c[0]) for c in certs)
        self._save_record()
        return len(certs)
