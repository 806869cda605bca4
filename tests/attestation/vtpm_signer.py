"""SEV-SNP + vTPM evidence as Cocos' agent makes it from a vTPM, for tests: an
RSA attestation key, TPM2 quotes over PCR banks with the caller's nonce, and
an SEV-SNP report (from the test AMD signer) whose report data binds the key,
packed as go-tpm-tools' ``attest.Attestation``. Each part can be made wrong."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from prism_backends.attestation.snp import abi
from prism_backends.attestation.vtpm.attestation_pb2 import Attestation, SnpReport
from tests.attestation.snp import signer as snp_signer
from tests.attestation.snp.signer import Endorsement, ReportSpec

ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C}
DEFAULT_PCRS = {
    "sha256": {i: hashlib.sha256(bytes([i])).digest() for i in (0, 4, 7, 15)},
    "sha384": {i: hashlib.sha384(bytes([i])).digest() for i in (0, 4, 7, 15)},
}


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def ak_public(key: rsa.RSAPrivateKey) -> bytes:
    """A TPMT_PUBLIC for an RSA-2048 restricted signing key (RSASSA-SHA256)."""
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    return (
        struct.pack(">HHI", 0x0001, 0x000B, 0x00050072)
        + _sized(b"")  # authPolicy
        + struct.pack(">H", 0x0010)  # symmetric: none
        + struct.pack(">HH", 0x0014, 0x000B)  # scheme RSASSA, SHA-256
        + struct.pack(">HI", 2048, 0)  # keyBits, default exponent
        + _sized(modulus)
    )


def quote_info(nonce: bytes, bank: str, indices: list[int], digest: bytes) -> bytes:
    """A TPMS_ATTEST of type quote."""
    bitmap = bytearray(3)
    for index in indices:
        bitmap[index // 8] |= 1 << (index % 8)
    return (
        struct.pack(">IH", 0xFF544347, 0x8018)
        + _sized(b"\x00\x0b" + bytes(32))  # qualifiedSigner
        + _sized(nonce)
        + struct.pack(">QIIB", 123456, 1, 0, 1)  # clockInfo
        + struct.pack(">Q", 0x2020)  # firmwareVersion
        + struct.pack(">IHB", 1, ALG_IDS[bank], 3)
        + bytes(bitmap)
        + _sized(digest)
    )


def signature(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    signed = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return struct.pack(">HH", 0x0014, 0x000B) + _sized(signed)


def report_message(raw: bytes) -> SnpReport:
    """go-sev-guest's Report fields of a report's bytes."""
    r = abi.parse_report(raw[: abi.REPORT_SIZE])
    fms = 0
    if r.cpuid_fam_id is not None and r.cpuid_mod_id is not None and r.cpuid_step is not None:
        family, model = r.cpuid_fam_id, r.cpuid_mod_id
        extended = family - 0xF if family >= 0xF else 0
        fms = (
            extended << 20 | (model >> 4) << 16 | min(family, 0xF) << 8 | (model & 0xF) << 4
            | r.cpuid_step
        )  # fmt: skip
    return SnpReport(
        version=r.version, guest_svn=r.guest_svn, policy=r.policy, family_id=r.family_id,
        image_id=r.image_id, vmpl=r.vmpl, signature_algo=r.signature_algo,
        current_tcb=r.current_tcb, platform_info=r.platform_info, signer_info=r.signer_info,
        report_data=r.report_data, measurement=r.measurement, host_data=r.host_data,
        id_key_digest=r.id_key_digest, author_key_digest=r.author_key_digest,
        report_id=r.report_id, report_id_ma=r.report_id_ma, reported_tcb=r.reported_tcb,
        chip_id=r.chip_id, committed_tcb=r.committed_tcb, current_build=r.current_build,
        current_minor=r.current_minor, current_major=r.current_major,
        committed_build=r.committed_build, committed_minor=r.committed_minor,
        committed_major=r.committed_major, launch_tcb=r.launch_tcb,
        signature=raw[abi.SIGNATURE_OFFSET : abi.REPORT_SIZE], cpuid1eax_fms=fms,
        launch_mit_vector=r.launch_mit_vector or 0, current_mit_vector=r.current_mit_vector or 0,
    )  # fmt: skip


@dataclass
class VtpmEvidence:
    """What to make; the ``*_wrong`` knobs make one part lie."""

    tee_nonce: bytes  # SHA-512 of the agent's certificate PEM
    nonce: bytes  # SHA-256 of it: the quotes' extraData
    spec: ReportSpec = field(default_factory=ReportSpec)
    pcrs: Mapping[str, Mapping[int, bytes]] = field(default_factory=lambda: DEFAULT_PCRS)
    sent_pcrs_wrong: bool = False  # the values sent are not the ones quoted
    quote_signed_by_another_key: bool = False
    report_binds_another_key: bool = False
    report_byte_flipped: bool = False

    def build(self, endorsement: Endorsement) -> bytes:
        ak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ak_pub = ak_public(ak)
        attestation = Attestation(ak_pub=ak_pub, event_log=b"\x00" * 16)
        signer_key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if self.quote_signed_by_another_key
            else ak
        )
        for bank, values in self.pcrs.items():
            indices = sorted(values)
            digest = hashlib.sha256(b"".join(values[i] for i in indices)).digest()
            info = quote_info(self.nonce, bank, indices, digest)
            quote = attestation.quotes.add(quote=info, raw_sig=signature(signer_key, info))
            quote.pcrs.hash = ALG_IDS[bank]
            for index in indices:
                sent = values[index]
                quote.pcrs.pcrs[index] = bytes(len(sent)) if self.sent_pcrs_wrong else sent
        bound_key = (
            ak_public(rsa.generate_private_key(65537, 2048))
            if self.report_binds_another_key
            else ak_pub
        )
        report_data = hashlib.sha3_512(self.tee_nonce + bound_key).digest()
        raw = bytearray(snp_signer.signed(self.spec.replace(report_data=report_data), endorsement))
        if self.report_byte_flipped:
            raw[0x90] ^= 1
        snp = attestation.sev_snp_attestation
        snp.report.CopyFrom(report_message(bytes(raw)))
        snp.certificate_chain.vcek_cert = endorsement.der
        return attestation.SerializeToString()
