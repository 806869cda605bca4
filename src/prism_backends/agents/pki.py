"""The agents' certificate authority: one CA, a server certificate for the
agents endpoint, and a client certificate per CVM naming its id.

Keys are ECDSA P-256 (what every gRPC TLS stack accepts). The CA lives in the
data directory unless the deployment supplies its own.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prism_backends.datadir import prepare_data_dir

CA_CERT_FILE = "agents-ca.pem"
CA_KEY_FILE = "agents-ca-key.pem"
SERVER_CERT_FILE = "agents-server.pem"
SERVER_KEY_FILE = "agents-server-key.pem"
CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=397)
# Clocks in fresh VMs drift; a certificate valid from a little earlier avoids
# refusing an agent whose clock is behind.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    cert_pem: bytes
    key_pem: bytes
    serial: int
    not_before: datetime
    not_after: datetime


class AgentCA:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self._key = key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _private_pem(self._key)

    def issue_client(
        self, cvm_id: str, domain_id: str, validity: timedelta, now: datetime | None = None
    ) -> IssuedCertificate:
        """A client certificate whose subject CN is the CVM's id."""
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cvm_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, domain_id),
            ]
        )
        return self._issue(
            subject,
            validity,
            now,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            san=x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:cvm:{cvm_id}")]),
        )

    def issue_server(self, names: list[str], now: datetime | None = None) -> IssuedCertificate:
        entries: list[x509.GeneralName] = []
        for name in names:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                entries.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        return self._issue(
            subject,
            SERVER_VALIDITY,
            now,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            san=x509.SubjectAlternativeName(entries),
        )

    def _issue(
        self,
        subject: x509.Name,
        validity: timedelta,
        now: datetime | None,
        *,
        usage: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName,
    ) -> IssuedCertificate:
        moment = now or datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        not_before, not_after = moment - BACKDATE, moment + validity
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(san, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_private_pem(key),
            serial=serial,
            not_before=not_before,
            not_after=not_after,
        )


def create_ca(common_name: str = "prism-backends agents CA") -> AgentCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return AgentCA(cert, key)


def load_ca(cert_path: Path, key_path: Path) -> AgentCA:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} must hold an EC private key")
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return AgentCA(cert, key)


@contextmanager
def creation_lock(data_dir: Path) -> Iterator[None]:
    """Serialises first-use creation of keys and certificates in the data
    directory, so processes starting together end up with the same ones."""
    prepare_data_dir(data_dir)
    with open(data_dir / ".agents-pki.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_create_ca(
    data_dir: Path, prefix: str = "agents", common_name: str = "prism-backends agents CA"
) -> AgentCA:
    """The embedded default: a CA created in the data directory on first use
    (``PREFIX-ca.pem`` and ``PREFIX-ca-key.pem``)."""
    cert_path, key_path = data_dir / f"{prefix}-ca.pem", data_dir / f"{prefix}-ca-key.pem"
    with creation_lock(data_dir):
        if not cert_path.exists():
            ca = create_ca(common_name)
            write_private(key_path, ca.key_pem)
            cert_path.write_bytes(ca.cert_pem)
            return ca
    return load_ca(cert_path, key_path)


def load_or_create_server_credentials(
    data_dir: Path, ca: AgentCA, names: list[str], prefix: str = "agents"
) -> tuple[bytes, bytes]:
    """(certificate chain PEM, key PEM) of the endpoint, reissued when its names
    change, its CA changes or it nears expiry (``PREFIX-server.pem``, ``-key.pem``)."""
    cert_path = data_dir / f"{prefix}-server.pem"
    key_path = data_dir / f"{prefix}-server-key.pem"
    with creation_lock(data_dir):
        if cert_path.exists() and key_path.exists():
            current = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if _still_good(current, ca, names):
                return cert_path.read_bytes(), key_path.read_bytes()
        issued = ca.issue_server(names)
        write_private(key_path, issued.key_pem)
        cert_path.write_bytes(issued.cert_pem)
        return issued.cert_pem, issued.key_pem


def _still_good(cert: x509.Certificate, ca: AgentCA, names: list[str]) -> bool:
    if cert.issuer != ca.cert.subject:
        return False
    try:
        # Every generated CA has the same name: check it is this CA's signature.
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=30):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    present = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )
    return set(names) <= present


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
