"""End to end: an agent's evidence (from the test-only AMD signer, with its roots
injected into the service) is verified, bound to the agent's certificate and
checked against the CVM's policy; a token is issued that validates against the
served JWKS. Evidence bound to another certificate is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.attestation.appraisal import Anchors
from prism_backends.attestation.snp import abi
from prism_backends.attestation.vtpm import verify as vtpm_verify
from prism_backends.cvms.models import CVM
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from tests.agents.conftest import DOMAIN, Api, channel_of, eventually, receive, serving
from tests.attestation import eat_wrap
from tests.attestation.snp import signer
from tests.attestation.vtpm_signer import DEFAULT_PCRS, VtpmEvidence

MEASUREMENT = bytes(range(48))


def _policy(measurement: bytes) -> bytes:
    return json.dumps(
        {
            "policy": {
                "measurement": base64.b64encode(measurement).decode(),
                "policy": 0x30000,
                "minimum_guest_svn": 1,
            },
            "root_of_trust": {"product_line": "Milan"},
        }
    ).encode()


def _evidence(report_data: bytes) -> bytes:
    hierarchy = signer.hierarchy(abi.MILAN)
    vcek = hierarchy.endorsement(tcb=signer.MILAN_TCB, chip_id=signer.CHIP_ID)
    spec = signer.ReportSpec(report_data=report_data, measurement=MEASUREMENT)
    return signer.signed(spec, vcek) + abi.encode_cert_table([(abi.VCEK_GUID, vcek.der)])


def _trust_test_roots(runtime: Runtime) -> None:
    runtime.anchors = Anchors(snp_roots=signer.hierarchy(abi.MILAN).roots(), tdx_roots=[])


def _set_policy(runtime: Runtime, cvm_id: str, policy: bytes) -> None:
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(CVM)
            .where(CVM.id == cvm_id)
            .values(attestation_policy=policy, attestation_policy_source="reference")
        )


def _send(runtime: Runtime, api: Api, cvm_id: str, evidence: bytes) -> dict[str, object]:
    credential = api.credential(cvm_id)

    async def scenario() -> dict[str, object]:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=(("job-id", cvm_id),))
            await receive(call, "agentStateReq")
            await call.write(
                cvms_pb2.ClientStreamMessage(
                    vTPMattestationReport=cvms_pb2.AttestationResponse(file=evidence)
                )
            )

            def appraised() -> dict[str, object] | None:
                cvm = api.cvm(cvm_id)
                return cvm if cvm["attestation"] or cvm["attestation_error"] else None

            cvm = await eventually(appraised, "the evidence to be appraised")
            call.cancel()
            return cvm

    return asyncio.run(scenario())


def test_verified_evidence_gets_a_token_that_validates_against_the_jwks(
    runtime: Runtime, api: Api, client: TestClient
) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("attested")
    _set_policy(runtime, cvm_id, _policy(MEASUREMENT))
    cert_pem = api.credential(cvm_id).client_cert
    cvm = _send(runtime, api, cvm_id, _evidence(hashlib.sha512(cert_pem).digest()))

    assert cvm["attestation_error"] == ""
    token = str(cvm["attestation_token"])
    jwks = client.get("/backends/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(token)
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], issuer="prism-backends")
    assert claims["sub"] == cvm_id
    assert claims["domain"] == DOMAIN
    assert claims["platform"] == "sev-snp"
    assert claims["verdict"] == "verified"
    assert claims["measurement"] == MEASUREMENT.hex()
    assert claims["eat_nonce"] == hashlib.sha512(cert_pem).hexdigest()
    assert claims["policy_digest"] == "sha256:" + hashlib.sha256(_policy(MEASUREMENT)).hexdigest()
    assert claims["tcb"]["product"] == "Milan"
    assert claims["exp"] > claims["iat"]
    stats = client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}/statistics", headers=api.headers).json()[
        "attestation"
    ]
    assert (stats["verified"], stats["failed"]) == (1, 0)


def test_evidence_bound_to_another_certificate_is_refused(
    runtime: Runtime, api: Api, client: TestClient
) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("stolen")
    _set_policy(runtime, cvm_id, _policy(MEASUREMENT))
    other = api.credential(api.create("other")).client_cert
    cvm = _send(runtime, api, cvm_id, _evidence(hashlib.sha512(other).digest()))

    assert cvm["attestation_token"] == ""
    assert str(cvm["attestation_error"]).startswith("report_data: expected ")
    events = api.events(cvm_id)
    failed = [event for event in events if event["kind"] == "attestation_failed"]
    assert failed and failed[0]["details"]["failures"][0]["field"] == "report_data"
    stats = client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}/statistics", headers=api.headers).json()[
        "attestation"
    ]
    assert (stats["verified"], stats["failed"]) == (0, 1)


def test_a_policy_mismatch_is_refused_naming_the_field(runtime: Runtime, api: Api) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("tampered")
    _set_policy(runtime, cvm_id, _policy(bytes(48)))
    cert_pem = api.credential(cvm_id).client_cert
    cvm = _send(runtime, api, cvm_id, _evidence(hashlib.sha512(cert_pem).digest()))
    assert cvm["attestation_token"] == ""
    assert "measurement: expected " in str(cvm["attestation_error"])


def test_evidence_chaining_to_roots_we_do_not_trust_is_refused(runtime: Runtime, api: Api) -> None:
    # The bundled AMD roots only: the synthetic hierarchy is not among them.
    cvm_id = api.create("untrusted")
    _set_policy(runtime, cvm_id, _policy(MEASUREMENT))
    cert_pem = api.credential(cvm_id).client_cert
    cvm = _send(runtime, api, cvm_id, _evidence(hashlib.sha512(cert_pem).digest()))
    assert cvm["attestation_token"] == ""
    assert cvm["attestation_error"] != ""


def test_without_a_policy_evidence_is_refused_unless_trust_on_first_use(
    runtime: Runtime, api: Api
) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("no-policy")
    cert_pem = api.credential(cvm_id).client_cert
    cvm = _send(runtime, api, cvm_id, _evidence(hashlib.sha512(cert_pem).digest()))
    assert cvm["attestation_token"] == ""
    assert "no attestation policy" in str(cvm["attestation_error"])


@pytest.mark.parametrize("wrap", [eat_wrap.cbor_eat, eat_wrap.jwt_eat], ids=["cbor", "jwt"])
def test_evidence_in_an_eat_as_cocos_sends_it_gets_a_token(
    runtime: Runtime, api: Api, wrap: Callable[..., bytes]
) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("eat")
    _set_policy(runtime, cvm_id, _policy(MEASUREMENT))
    cert_pem = api.credential(cvm_id).client_cert
    report = _evidence(hashlib.sha512(cert_pem).digest())
    # Cocos' agent: report data SHA-512 of its certificate PEM, eat_nonce SHA-256 of it.
    cvm = _send(runtime, api, cvm_id, wrap(report, hashlib.sha256(cert_pem).digest()))
    assert cvm["attestation_error"] == ""
    assert cvm["attestation_token"]
    verified = [e for e in api.events(cvm_id) if e["kind"] == "attestation_verified"]
    assert verified and verified[0]["details"]["eat"]["claims"]["platform_type"] == "SNP"


@pytest.mark.parametrize(
    ("lies", "nonce", "named"),
    [
        ({"x-cocos-sevsnp.measurement": bytes(48)}, None, "x-cocos-sevsnp.measurement"),
        ({}, bytes(32), "eat_nonce"),
    ],
    ids=["lying-claim", "wrong-nonce"],
)
def test_an_eat_that_lies_or_carries_another_nonce_is_refused(
    runtime: Runtime, api: Api, lies: dict[str, object], nonce: bytes | None, named: str
) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("lying-eat")
    _set_policy(runtime, cvm_id, _policy(MEASUREMENT))
    cert_pem = api.credential(cvm_id).client_cert
    report = _evidence(hashlib.sha512(cert_pem).digest())
    token = eat_wrap.cbor_eat(report, nonce or hashlib.sha256(cert_pem).digest(), lies=lies)
    cvm = _send(runtime, api, cvm_id, token)
    assert cvm["attestation_token"] == ""
    assert named in str(cvm["attestation_error"])


def test_snp_vtpm_evidence_in_an_eat_gets_a_token_naming_the_pcrs(
    runtime: Runtime, api: Api
) -> None:
    _trust_test_roots(runtime)
    cvm_id = api.create("vtpm")
    pinned = json.loads(_policy(MEASUREMENT))
    pcr15 = DEFAULT_PCRS["sha256"][15].hex()
    _set_policy(
        runtime, cvm_id, json.dumps({**pinned, "pcr_values": {"sha256": {"15": pcr15}}}).encode()
    )
    cert_pem = api.credential(cvm_id).client_cert
    hierarchy = signer.hierarchy(abi.MILAN)
    vcek = hierarchy.endorsement(tcb=signer.MILAN_TCB, chip_id=signer.CHIP_ID)
    raw = VtpmEvidence(
        tee_nonce=hashlib.sha512(cert_pem).digest(),
        nonce=hashlib.sha256(cert_pem).digest(),
        spec=signer.ReportSpec(measurement=MEASUREMENT),
    ).build(vcek)
    parsed = vtpm_verify.parse(raw)
    assert parsed is not None
    token = eat_wrap.cbor_eat(
        raw, hashlib.sha256(cert_pem).digest(), "SNP-vTPM",
        snp_report=vtpm_verify.snp_evidence(parsed),
    )  # fmt: skip
    cvm = _send(runtime, api, cvm_id, token)
    assert cvm["attestation_error"] == ""
    claims = jwt.decode(str(cvm["attestation_token"]), options={"verify_signature": False})
    assert claims["claims"]["vtpm"]["pcrs_checked"] == ["sha256:15"]


@pytest.mark.parametrize("signed_by", ["configured", "other"])
def test_a_signed_corim_policy_is_checked_with_the_providers_keys(
    runtime: Runtime, api: Api, signed_by: str
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.attestation.test_corim import corimgen, signed

    configured, other = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    providers = runtime.settings.data_dir / "providers"
    providers.mkdir(exist_ok=True)
    (providers / "corim.pem").write_bytes(
        configured.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (providers / "external.toml").write_text(
        'name = "external"\n[attestation_policy]\ncorim_keys = ["corim.pem"]\n'
    )
    _trust_test_roots(runtime)
    cvm_id = api.create("corim")
    key = configured if signed_by == "configured" else other
    _set_policy(runtime, cvm_id, signed(corimgen("snp", [MEASUREMENT], product="Milan"), key))
    cert_pem = api.credential(cvm_id).client_cert
    cvm = _send(runtime, api, cvm_id, _evidence(hashlib.sha512(cert_pem).digest()))
    if signed_by == "configured":
        assert cvm["attestation_error"] == "" and cvm["attestation_token"]
    else:
        assert cvm["attestation_token"] == ""
        assert "signature does not verify" in str(cvm["attestation_error"])


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        ({"report_byte_flipped": True}, "signature"),
        ({"report_binds_another_key": True}, "binds the attestation key"),
        ({"quote_signed_by_another_key": True}, "TPM quote's signature"),
        ({"pcr": True}, "pcr_values.sha256.15"),
    ],
)
def test_broken_snp_vtpm_evidence_is_refused_naming_the_check(
    runtime: Runtime, api: Api, wrong: dict[str, Any], named: str
) -> None:
    wrong = dict(wrong)  # the parameters are shared by the store variants
    _trust_test_roots(runtime)
    cvm_id = api.create("vtpm-broken")
    pinned = {**json.loads(_policy(MEASUREMENT)), "pcr_values": {"sha256": {"15": "00" * 32}}}
    _set_policy(
        runtime,
        cvm_id,
        json.dumps(
            pinned if wrong.pop("pcr", False) else json.loads(_policy(MEASUREMENT))
        ).encode(),
    )
    cert_pem = api.credential(cvm_id).client_cert
    vcek = signer.hierarchy(abi.MILAN).endorsement(tcb=signer.MILAN_TCB, chip_id=signer.CHIP_ID)
    raw = VtpmEvidence(
        tee_nonce=hashlib.sha512(cert_pem).digest(),
        nonce=hashlib.sha256(cert_pem).digest(),
        spec=signer.ReportSpec(measurement=MEASUREMENT),
        **wrong,
    ).build(vcek)
    cvm = _send(runtime, api, cvm_id, raw)
    assert cvm["attestation_token"] == ""
    assert named in str(cvm["attestation_error"])
