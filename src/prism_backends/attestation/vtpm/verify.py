"""Verifying SEV-SNP + vTPM evidence (go-tpm-tools' ``attest.Attestation``, as
Cocos' agent sends it from a COCONUT-SVSM vTPM). Pure: bytes in, values or
errors out; the SEV-SNP report is left to the SNP core.

What holds it together:
- each TPM quote is signed by the attestation key (``ak_pub``), carries the
  caller's nonce as ``extraData``, and its PCR digest is over the PCR values
  sent beside it, so those values are what the vTPM measured;
- the SEV-SNP report's ``report_data`` is SHA3-512 of the TEE nonce followed
  by ``ak_pub``, so the hardware vouches for that key (and the key for the
  PCRs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from prism_backends.attestation.common import MalformedEvidence
from prism_backends.attestation.snp.abi import (
    ARK_GUID,
    ASK_GUID,
    REPORT_SIZE,
    VCEK_GUID,
    VLEK_GUID,
    encode_cert_table,
)
from prism_backends.attestation.vtpm import tpm2
from prism_backends.attestation.vtpm.attestation_pb2 import Attestation, SnpReport


@dataclass(frozen=True)
class VerifiedQuotes:
    """What the quotes proved: the PCR values per bank, and the attestation key."""

    ak_pub: bytes
    pcrs: Mapping[str, Mapping[int, bytes]]
    nonce: bytes


def parse(raw: bytes) -> Attestation | None:
    """The attestation in ``raw``; None when it is not one (no key or no quote)."""
    message = Attestation()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        return None
    if not message.ak_pub or not message.quotes:
        return None
    return message


def binding(tee_nonce: bytes, ak_pub: bytes) -> bytes:
    """The ``report_data`` that binds the attestation key, as Cocos computes it."""
    return hashlib.sha3_512(tee_nonce + ak_pub).digest()


def verify_quotes(attestation: Attestation) -> VerifiedQuotes:
    """Check every quote's signature and PCR digest; raises SignatureInvalid or
    MalformedEvidence."""
    key = tpm2.parse_public(attestation.ak_pub)
    banks: dict[str, dict[int, bytes]] = {}
    quoted_nonce = b""
    for quote in attestation.quotes:
        info = tpm2.parse_quote(quote.quote)
        hash_name = tpm2.verify_signature(key, quote.raw_sig, quote.quote)
        if quoted_nonce and info.extra_data != quoted_nonce:
            raise MalformedEvidence("the TPM quotes carry different nonces")
        quoted_nonce = info.extra_data
        values = dict(quote.pcrs.pcrs)
        for bank, indices in info.selection:
            missing = [i for i in indices if i not in values]
            if missing:
                raise MalformedEvidence(f"the {bank} PCRs {missing} were quoted but not sent")
        selected = [values[i] for _bank, indices in info.selection for i in indices]
        if tpm2.pcr_digest(hash_name, selected) != info.pcr_digest:
            raise MalformedEvidence(
                "the PCR values sent are not the ones quoted (the PCR digest differs)"
            )
        for bank, indices in info.selection:
            banks.setdefault(bank, {}).update({i: values[i] for i in indices})
    return VerifiedQuotes(ak_pub=bytes(attestation.ak_pub), pcrs=banks, nonce=quoted_nonce)


def snp_evidence(attestation: Attestation) -> bytes:
    """The SEV-SNP report the attestation carries, as the SNP core reads it:
    the report's bytes rebuilt from its fields, then a certificate table."""
    if not attestation.HasField("sev_snp_attestation"):
        raise MalformedEvidence("the vTPM attestation carries no SEV-SNP report")
    snp = attestation.sev_snp_attestation
    chain = snp.certificate_chain
    entries = [
        (guid, cert)
        for guid, cert in (
            (VCEK_GUID, chain.vcek_cert),
            (VLEK_GUID, chain.vlek_cert),
            (ASK_GUID, chain.ask_cert),
            (ARK_GUID, chain.ark_cert),
        )
        if cert
    ]
    report = report_bytes(snp.report)
    return report + encode_cert_table(entries) if entries else report


def report_bytes(report: SnpReport) -> bytes:
    """An ATTESTATION_REPORT from go-sev-guest's fields (its ReportToAbiBytes)."""
    out = bytearray(REPORT_SIZE)

    def put(offset: int, value: bytes, size: int, name: str) -> None:
        if len(value) not in (0, size):
            raise MalformedEvidence(
                f"the SEV-SNP report's {name} is {len(value)} bytes, not {size}"
            )
        out[offset : offset + len(value)] = value

    def u32(offset: int, value: int) -> None:
        out[offset : offset + 4] = value.to_bytes(4, "little")

    def u64(offset: int, value: int) -> None:
        out[offset : offset + 8] = value.to_bytes(8, "little")

    u32(0x00, report.version)
    u32(0x04, report.guest_svn)
    u64(0x08, report.policy)
    put(0x10, report.family_id, 16, "family_id")
    put(0x20, report.image_id, 16, "image_id")
    u32(0x30, report.vmpl)
    u32(0x34, report.signature_algo)
    u64(0x38, report.current_tcb)
    u64(0x40, report.platform_info)
    u32(0x48, report.signer_info)
    put(0x50, report.report_data, 64, "report_data")
    put(0x90, report.measurement, 48, "measurement")
    put(0xC0, report.host_data, 32, "host_data")
    put(0xE0, report.id_key_digest, 48, "id_key_digest")
    put(0x110, report.author_key_digest, 48, "author_key_digest")
    put(0x140, report.report_id, 32, "report_id")
    put(0x160, report.report_id_ma, 32, "report_id_ma")
    u64(0x180, report.reported_tcb)
    if report.version >= 3:
        out[0x188:0x18B] = bytes(_family_model_stepping(report.cpuid1eax_fms))
    put(0x1A0, report.chip_id, 64, "chip_id")
    u64(0x1E0, report.committed_tcb)
    out[0x1E8:0x1EB] = bytes((report.current_build, report.current_minor, report.current_major))
    out[0x1EC:0x1EF] = bytes(
        (report.committed_build, report.committed_minor, report.committed_major)
    )
    u64(0x1F0, report.launch_tcb)
    if report.version >= 5:
        u64(0x1F8, report.launch_mit_vector)
        u64(0x200, report.current_mit_vector)
    put(0x2A0, report.signature, 0x200, "signature")
    return bytes(out)


def _family_model_stepping(eax: int) -> tuple[int, int, int]:
    """CPUID(1).EAX as the report's family, model and stepping bytes."""
    family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF)
    model = ((eax >> 16) & 0xF) << 4 | ((eax >> 4) & 0xF)
    return family & 0xFF, model & 0xFF, eax & 0xF
