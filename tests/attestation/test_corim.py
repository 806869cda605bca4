"""CoRIM policies: built the way Cocos' corimgen builds them (UUID-keyed
measurements known by position, the product as the environment's instance
UUID) and the way our manager does (named measurements), unsigned or signed;
evidence appraised against them both ways; conversions to and from JSON."""

from __future__ import annotations

import base64
import json
import uuid

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from prism_backends.attestation import corim
from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.common import PolicyError
from prism_backends.attestation.snp import abi as snp_abi
from prism_backends.manager.corim import snp_reference_corim
from tests.attestation.snp import signer as snp_signer
from tests.attestation.snp.signer import Endorsement, ReportSpec
from tests.attestation.tdx import signer as tdx_signer
from tests.attestation.tdx.signer import Pki, QuoteFields

MILAN = snp_signer.hierarchy(snp_abi.MILAN)
SPEC = ReportSpec()


def _uuid(value: uuid.UUID | None = None) -> cbor2.CBORTag:
    return cbor2.CBORTag(37, (value or uuid.uuid4()).bytes)


def corimgen(platform: str, digests: list[bytes], product: str = "", svn: int = 0) -> bytes:
    """An unsigned CoRIM shaped as Cocos' corimgen (veraison/corim) writes it."""
    environment: dict[int, object] = {0: {0: _uuid()}}
    if product:
        environment[1] = _uuid(uuid.uuid5(uuid.NAMESPACE_OID, product))
    measurements = []
    for index, digest in enumerate(digests):
        mval: dict[int, object] = {2: [[1, digest]]}
        if index == 0 and svn:
            mval[1] = cbor2.CBORTag(552, svn)
        measurements.append({0: _uuid(), 1: mval})
    comid = {1: {0: f"{platform}-tag-{uuid.uuid4()}"}, 4: {0: [[environment, measurements]]}}
    tag = cbor2.dumps(cbor2.CBORTag(506, comid))
    return cbor2.dumps(cbor2.CBORTag(501, {0: f"{platform}-corim-{uuid.uuid4()}", 1: [tag]}))


def signed(document: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    protected = cbor2.dumps({1: -7, 3: "application/rim+cbor"})
    to_sign = cbor2.dumps(["Signature1", protected, b"", document])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    sign1 = [protected, {}, document, r.to_bytes(32, "big") + s.to_bytes(32, "big")]
    return cbor2.dumps(cbor2.CBORTag(18, sign1))


@pytest.fixture(scope="module")
def vcek() -> Endorsement:
    return MILAN.endorsement(tcb=SPEC.reported_tcb, chip_id=SPEC.chip_id)


def snp_verdict(
    policy: bytes, vcek: Endorsement, keys: tuple[ec.EllipticCurvePublicKey, ...] = ()
) -> Verdict:
    return appraise(
        snp_signer.signed(SPEC, vcek),
        anchors=Anchors(snp_roots=MILAN.roots(), tdx_roots=[]),
        now=snp_signer.NOW,
        policy=policy,
        endorsement=vcek.der,
        corim_keys=keys,
    )


def test_a_corimgen_snp_corim_appraises_evidence_both_ways(vcek: Endorsement) -> None:
    good = corimgen("snp", [SPEC.measurement], product="Milan", svn=SPEC.guest_svn)
    assert snp_verdict(good, vcek).verified
    reference = corim.parse(good, "sev-snp")
    assert reference.values["product_line"] == "Milan"
    assert reference.values["minimum_guest_svn"] == SPEC.guest_svn
    other = snp_verdict(corimgen("snp", [bytes(48)]), vcek)
    assert not other.verified
    assert [f.field for f in other.failures] == ["measurement"]
    too_new = snp_verdict(corimgen("snp", [SPEC.measurement], svn=SPEC.guest_svn + 1), vcek)
    assert not too_new.verified and "guest_svn: expected >= " in too_new.reason


def test_our_managers_corim_appraises_with_policy_and_host_data(vcek: Endorsement) -> None:
    ours = snp_reference_corim(
        measurement=SPEC.measurement,
        guest_policy=SPEC.policy,
        host_data=SPEC.host_data or bytes(32),
    )
    assert snp_verdict(ours, vcek).verified
    wrong = snp_reference_corim(
        measurement=SPEC.measurement, guest_policy=SPEC.policy, host_data=b"\x01" * 32
    )
    refused = snp_verdict(wrong, vcek)
    assert not refused.verified and "host_data" in refused.reason


def test_a_corimgen_tdx_corim_appraises_quotes_both_ways() -> None:
    pki: Pki = tdx_signer.make_pki()
    fields = QuoteFields()
    quote = tdx_signer.sign_quote(pki, fields)
    anchors = Anchors(snp_roots={}, tdx_roots=[pki.root.cert])

    def verdict(document: bytes) -> Verdict:
        return appraise(quote, anchors=anchors, now=tdx_signer.NOW, policy=document)

    values = [fields.mr_td, fields.mr_seam, *fields.rtmrs]
    assert verdict(corimgen("tdx", values)).verified
    lying = verdict(corimgen("tdx", [fields.mr_td, fields.mr_seam, fields.rtmrs[0], bytes(48)]))
    assert not lying.verified
    assert "rtmr" in lying.reason.lower()


def test_a_signed_corim_verifies_with_its_key_and_only_with_it(vcek: Endorsement) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    document = signed(corimgen("snp", [SPEC.measurement]), key)
    assert snp_verdict(document, vcek, (other.public_key(), key.public_key())).verified
    wrong = snp_verdict(document, vcek, (other.public_key(),))
    assert not wrong.verified and "signature does not verify" in wrong.reason
    unconfigured = snp_verdict(document, vcek)
    assert not unconfigured.verified and "no CoRIM keys" in unconfigured.reason


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"\xd9\x01\xf5\xff", "CBOR"),
        (cbor2.dumps(cbor2.CBORTag(501, {0: "x"})), "no tags"),
        (cbor2.dumps(cbor2.CBORTag(501, {0: "x", 1: []})), "no sev-snp reference values"),
    ],
)
def test_bad_corims_are_refused_with_a_reason(document: bytes, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        corim.parse(document, "sev-snp")


def test_conversions_keep_every_check_or_name_what_they_cannot() -> None:
    policy: dict[str, dict[str, object]] = {
        "policy": {
            "measurement": base64.b64encode(SPEC.measurement).decode(),
            "policy": SPEC.policy,
            "minimum_guest_svn": 2,
        },
        "root_of_trust": {"product_line": "Milan"},
    }
    document = corim.from_policy_json(json.dumps(policy).encode(), "sev-snp")
    back = json.loads(corim.to_policy_json(corim.parse(document, "sev-snp")))
    assert back["policy"] == policy["policy"]
    assert back["root_of_trust"] == {"product_line": "Milan"}
    policy["policy"]["require_id_block"] = True
    policy["root_of_trust"]["check_crl"] = True
    with pytest.raises(PolicyError, match=r"require_id_block, root_of_trust\.check_crl"):
        corim.from_policy_json(json.dumps(policy).encode(), "sev-snp")
