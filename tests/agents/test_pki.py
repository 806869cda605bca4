"""The agents CA: client and server certificates, and keys sealed at rest."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prism_backends.agents.pki import (
    CA_KEY_FILE,
    create_ca,
    load_or_create_ca,
    load_or_create_server_credentials,
)
from prism_backends.agents.sealing import KEK_FILE, Sealer, SealingError, sealer_from


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(issuer)


def test_client_certificate_names_the_cvm_and_is_for_client_auth() -> None:
    ca = create_ca()
    issued = ca.issue_client("cvm-1", "dom-1", timedelta(days=30))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    _verify_signed_by(cert, ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cvm-1"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.serial_number == issued.serial
    assert abs(cert.not_valid_after_utc - issued.not_after) < timedelta(seconds=1)
    assert b"PRIVATE KEY" in issued.key_pem


def test_ca_is_created_once_with_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    first = load_or_create_ca(tmp_path)
    again = load_or_create_ca(tmp_path)
    assert first.cert_pem == again.cert_pem
    mode = stat.S_IMODE((tmp_path / CA_KEY_FILE).stat().st_mode)
    assert mode == 0o600


def test_server_certificate_covers_its_names_and_is_reissued_when_they_change(
    tmp_path: Path,
) -> None:
    ca = load_or_create_ca(tmp_path)
    chain, _ = load_or_create_server_credentials(tmp_path, ca, ["localhost", "127.0.0.1"])
    same, _ = load_or_create_server_credentials(tmp_path, ca, ["localhost"])
    assert same == chain
    cert = x509.load_pem_x509_certificate(chain)
    _verify_signed_by(cert, ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    renamed, _ = load_or_create_server_credentials(tmp_path, ca, ["agents.example.com"])
    assert renamed != chain


def test_certificates_issued_in_the_past_expire() -> None:
    ca = create_ca()
    past = datetime.now(UTC) - timedelta(days=10)
    issued = ca.issue_client("cvm-1", "dom-1", timedelta(days=1), now=past)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert cert.not_valid_after_utc < datetime.now(UTC)


def test_sealed_keys_open_only_for_their_cvm_and_key() -> None:
    sealer = Sealer(b"k" * 32)
    sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----", bound_to="cvm-1")
    assert b"PRIVATE" not in sealed
    assert sealer.open(sealed, bound_to="cvm-1") == b"-----BEGIN PRIVATE KEY-----"
    with pytest.raises(SealingError):
        sealer.open(sealed, bound_to="cvm-2")
    with pytest.raises(SealingError):
        Sealer(b"x" * 32).open(sealed, bound_to="cvm-1")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealingError):
        sealer.open(tampered, bound_to="cvm-1")


def test_key_encryption_key_from_configuration_or_the_data_dir(tmp_path: Path) -> None:
    configured = sealer_from(base64.b64encode(b"c" * 32).decode(), tmp_path)
    assert not (tmp_path / KEK_FILE).exists()
    sealed = configured.seal(b"secret", bound_to="x")
    assert Sealer(b"c" * 32).open(sealed, bound_to="x") == b"secret"
    embedded = sealer_from(None, tmp_path)
    assert stat.S_IMODE((tmp_path / KEK_FILE).stat().st_mode) == 0o600
    assert sealer_from(None, tmp_path).open(embedded.seal(b"s", bound_to="y"), bound_to="y") == b"s"
    with pytest.raises(ValueError, match="base64 of 32 bytes"):
        sealer_from("not base64!", tmp_path)
