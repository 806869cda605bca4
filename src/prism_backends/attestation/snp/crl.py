"""AMD's certificate revocation lists: the ARK signs a CRL that may revoke the
ASK (VCEK chains) or the ASVK (VLEK chains); KDS serves it at the ASK's or
ASVK's distribution point (``/vcek/v1/{product}/crl``, ``/vlek/v1/...``).

``check`` is pure. ``CrlCache`` keeps each CRL until its ``nextUpdate`` and
fetches through the injected fetcher; a stale CRL is fetched again (past the
fetcher's own cache), and one that cannot be had raises ``CrlUnavailable``,
which the caller turns into a refusal or a note, as configured.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from prism_backends.attestation.common import (
    AttestationError,
    ChainInvalid,
    CollateralUnavailable,
    Fetcher,
    SignatureInvalid,
)

KDS_CRL_URL = "https://kdsintf.amd.com/{kind}/v1/{product}/crl"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
Unavailable = Literal["open", "closed"]


class CrlUnavailable(CollateralUnavailable):
    """The CRL could not be fetched, does not parse, or is stale even when fetched again."""


def crl_url(intermediate: x509.Certificate, product: str, vlek: bool) -> str:
    """The intermediate's CRL distribution point, else KDS's URL for the product."""
    try:
        points = intermediate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except (x509.ExtensionNotFound, ValueError):
        points = None
    for point in points.value if points else ():
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                "https://"
            ):
                return name.value
    return KDS_CRL_URL.format(kind="vlek" if vlek else "vcek", product=product)


def load(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlUnavailable(f"the AMD CRL does not parse: {exc}") from exc


def is_current(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    next_update = crl.next_update_utc
    return next_update is not None and crl.last_update_utc <= now <= next_update


def check(
    crl: x509.CertificateRevocationList,
    *,
    ark: x509.Certificate,
    intermediate: x509.Certificate,
    role: str,
) -> None:
    """Refuse a CRL the ARK did not sign, and an intermediate it revokes."""
    if crl.issuer != ark.subject:
        raise ChainInvalid(f"the AMD CRL is issued by {crl.issuer.rfc4514_string()}, not the ARK")
    key = ark.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainInvalid("the ARK's key is not RSA")
    pad: padding.AsymmetricPadding = (
        _PSS
        if crl.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
        else padding.PKCS1v15()
    )
    try:
        key.verify(crl.signature, crl.tbs_certlist_bytes, pad, hashes.SHA384())
    except InvalidSignature as exc:
        raise SignatureInvalid("the AMD CRL's signature does not verify with the ARK key") from exc
    revoked = crl.get_revoked_certificate_by_serial_number(intermediate.serial_number)
    if revoked is not None:
        raise ChainInvalid(
            f"the {role} (serial {intermediate.serial_number:x}) is revoked by AMD's CRL "
            f"since {revoked.revocation_date_utc.isoformat()}"
        )


@dataclass
class CrlCache:
    """CRLs by URL, each kept until its next update."""

    _crls: dict[str, x509.CertificateRevocationList] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(
        self, url: str, fetcher: Fetcher | None, now: datetime
    ) -> x509.CertificateRevocationList:
        with self._lock:
            cached = self._crls.get(url)
        if cached is not None and is_current(cached, now):
            return cached
        if fetcher is None:
            raise CrlUnavailable(f"the AMD CRL ({url}) is needed and fetching is off")
        try:
            crl = load(fetcher.get(url))
            refresh = getattr(fetcher, "refresh", None)
            if not is_current(crl, now) and callable(refresh):
                crl = load(refresh(url))  # the fetcher's cache held a stale one
        except CrlUnavailable:
            raise
        except AttestationError as exc:
            raise CrlUnavailable(f"the AMD CRL ({url}) cannot be fetched: {exc.reason}") from exc
        if not is_current(crl, now):
            raise CrlUnavailable(
                f"the AMD CRL ({url}) is stale: next update "
                f"{crl.next_update_utc and crl.next_update_utc.isoformat()}, now {now.isoformat()}"
            )
        with self._lock:
            self._crls[url] = crl
        return crl


@dataclass(frozen=True)
class RevocationChecks:
    """When AMD's CRL is consulted: always when a policy sets ``check_crl``
    (and then a CRL that cannot be had refuses the evidence); also without it
    when ``always`` (then ``when_unavailable`` decides: ``open`` notes it and
    accepts, ``closed`` refuses)."""

    always: bool = False
    when_unavailable: Unavailable = "open"
    cache: CrlCache = field(default_factory=CrlCache)
