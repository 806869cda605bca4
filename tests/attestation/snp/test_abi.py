"""The report and certificate-table parsers: fields, versions, reserved bytes."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism_backends.attestation.common import MalformedEvidence
from prism_backends.attestation.snp import abi

from . import samples
from .signer import ReportSpec


def test_real_sample_fields() -> None:
    report = abi.parse_report(samples.REPORT)
    assert report.version == 2
    assert report.guest_svn == 0
    assert report.policy == 0xB0000
    assert report.guest_policy.debug and report.guest_policy.smt
    assert not report.guest_policy.migrate_ma
    assert report.vmpl == 0
    assert report.signature_algo == 1
    assert report.platform.smt_enabled and not report.platform.tsme_enabled
    assert report.signing_key is abi.SigningKey.VCEK
    assert report.report_data[:5] == bytes([1, 2, 3, 4, 5]) and not any(report.report_data[5:])
    assert report.measurement.hex() == samples.MEASUREMENT
    assert report.report_id_ma == b"\xff" * 32
    assert report.chip_id == samples.CHIP_ID
    assert report.current_tcb == report.reported_tcb == report.committed_tcb == report.launch_tcb
    tcb = abi.decode_tcb(report.reported_tcb, abi.MILAN)
    assert (tcb.bl, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc) == (2, 0, 5, 68, None)
    assert report.current_version == (1, 49, 3) == report.committed_version
    assert report.cpuid_fam_id is None and report.cpuid_product is None
    assert report.launch_mit_vector is None
    assert report.signed_bytes() == samples.REPORT[:0x2A0]
    assert report.signature_r == samples.REPORT[0x2A0:0x2E8]
    assert report.signature_s == samples.REPORT[0x2E8:0x330]
    r, _s = report.signature_ints()
    assert r == int.from_bytes(samples.REPORT[0x2A0:0x2E8], "little")


def test_attestation_without_table_has_empty_table() -> None:
    attestation = abi.parse_attestation(samples.REPORT)
    assert attestation.certificates.entries == ()
    assert attestation.certificates.vcek is None


@pytest.mark.parametrize("size", [0, 0x49F, 0x4A1])
def test_parse_report_wants_exact_size(size: int) -> None:
    with pytest.raises(MalformedEvidence, match="0x4a0 bytes"):
        abi.parse_report(bytes(size))


def test_parse_attestation_wants_at_least_a_report() -> None:
    with pytest.raises(MalformedEvidence):
        abi.parse_attestation(samples.REPORT[:-1])


@pytest.mark.parametrize("version", [0, 1, 6, 0x102])
def test_unsupported_versions_are_rejected(version: int) -> None:
    raw = bytearray(samples.REPORT)
    struct.pack_into("<I", raw, 0, version)
    with pytest.raises(MalformedEvidence, match=f"version {version}"):
        abi.parse_report(bytes(raw))


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_supported_versions_parse(version: int) -> None:
    spec = ReportSpec(version=version, cpuid=(0x1A, 0x02, 0x01), mit_vectors=(0x5, 0x7))
    report = abi.parse_report(bytes(spec.encode()))
    assert report.version == version
    if version >= 3:
        assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (0x1A, 2, 1)
        assert report.cpuid_product == abi.TURIN
    else:
        assert report.cpuid_fam_id is None
    if version >= 5:
        assert (report.launch_mit_vector, report.current_mit_vector) == (5, 7)
    else:
        assert report.launch_mit_vector is None


def _reserved_offsets(version: int) -> list[int]:
    offsets = [*range(0x4C, 0x50), 0x1EB, 0x1EF]
    offsets += range(0x18B if version >= 3 else 0x188, 0x1A0)
    offsets += range(0x208 if version >= 5 else 0x1F8, 0x2A0)
    offsets += range(0x2A0 + 144, 0x4A0)
    return offsets


@pytest.mark.parametrize("version", [2, 3, 5])
def test_every_reserved_byte_must_be_zero(version: int) -> None:
    good = ReportSpec(version=version).encode()
    abi.parse_report(bytes(good))
    for offset in _reserved_offsets(version):
        raw = bytearray(good)
        raw[offset] = 0x01
        with pytest.raises(MalformedEvidence, match=f"offset 0x{offset:03x}"):
            abi.parse_report(bytes(raw))


def test_v2_cpuid_bytes_are_reserved_v5_vectors_are_reserved_before_v5() -> None:
    raw = ReportSpec(version=2).encode()
    raw[0x188] = 0x19
    with pytest.raises(MalformedEvidence, match="0x188"):
        abi.parse_report(bytes(raw))
    raw = ReportSpec(version=4).encode()
    raw[0x1F8] = 0x01
    with pytest.raises(MalformedEvidence, match="0x1f8"):
        abi.parse_report(bytes(raw))


def test_signature_tail_is_free_for_other_algorithms() -> None:
    raw = ReportSpec(signature_algo=0).encode()
    raw[0x400] = 0xAA
    assert abi.parse_report(bytes(raw)).signature_algo == 0


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (0x00000, "bit 17 must be 1"),
        (0x30000 | 1 << 26, "bits 26-63"),
        (1 << 63 | 0x20000, "26-63"),
    ],
)
def test_guest_policy_reserved_bits(policy: int, message: str) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        abi.parse_report(bytes(ReportSpec(policy=policy).encode()))


@pytest.mark.parametrize(
    ("signer_info", "message"),
    [(2 << 2, "SIGNING_KEY value 2"), (6 << 2, "value 6"), (1 << 5, "reserved bits")],
)
def test_signer_info_reserved_values(signer_info: int, message: str) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        abi.parse_report(bytes(ReportSpec(signer_info=signer_info).encode()))


def test_signer_info_decodes() -> None:
    info = abi.parse_signer_info(0b00111)
    assert info == abi.SignerInfo(abi.SigningKey.VLEK, mask_chip_key=True, author_key_en=True)
    assert abi.parse_signer_info(7 << 2).signing_key is abi.SigningKey.NONE


def test_guest_policy_decodes_every_bit() -> None:
    policy = abi.parse_guest_policy(0x3FF0000 | 0x0237)
    assert policy.abi_version == (2, 0x37)
    assert all(
        getattr(policy, name)
        for name in (
            "smt",
            "migrate_ma",
            "debug",
            "single_socket",
            "cxl_allowed",
            "mem_aes_256_xts",
            "rapl_dis",
            "ciphertext_hiding_dram",
            "page_swap_disable",
        )
    )


def test_platform_info_keeps_unknown_bits() -> None:
    info = abi.parse_platform_info(0x3F | 0x100)
    assert info.alias_check_complete and info.ecc_enabled and info.unknown_bits == 0x100


def test_tcb_layouts() -> None:
    raw = int.from_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 8]), "little")
    milan = abi.decode_tcb(raw, abi.MILAN)
    assert (milan.bl, milan.tee, milan.snp, milan.microcode) == (1, 2, 7, 8)
    assert milan.reserved == (3, 4, 5, 6) and milan.fmc is None
    turin = abi.decode_tcb(raw, abi.TURIN)
    assert (turin.fmc, turin.bl, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 8)
    assert turin.reserved == (5, 6, 7)
    assert turin.describe() == "0x0807060504030201 (fmc=1 bl=2 tee=3 snp=4 microcode=8)"
    with pytest.raises(ValueError, match="unknown SEV-SNP product"):
        abi.decode_tcb(raw, "Naples")
    with pytest.raises(ValueError, match="no FMC"):
        abi.compose_tcb(abi.GENOA, bl=1, tee=1, snp=1, microcode=1, fmc=1)


@given(
    product=st.sampled_from(abi.PRODUCTS),
    parts=st.lists(st.integers(0, 255), min_size=5, max_size=5),
)
def test_tcb_compose_decode_round_trip(product: str, parts: list[int]) -> None:
    bl, tee, snp, microcode, fmc = parts
    fmc = fmc if product == abi.TURIN else 0
    raw = abi.compose_tcb(product, bl=bl, tee=tee, snp=snp, microcode=microcode, fmc=fmc)
    decoded = abi.decode_tcb(raw, product)
    assert (decoded.bl, decoded.tee, decoded.snp, decoded.microcode) == (bl, tee, snp, microcode)
    assert decoded.fmc == (fmc if product == abi.TURIN else None)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_tcb_le_is_component_wise(a: int, b: int) -> None:
    expected = all(
        x <= y for x, y in zip(a.to_bytes(8, "little"), b.to_bytes(8, "little"), strict=True)
    )
    assert abi.tcb_le(a, b) is expected
    assert abi.tcb_le(a, a)


def test_product_from_cpuid() -> None:
    assert abi.product_from_cpuid(0x19, 0x01) == abi.MILAN
    assert abi.product_from_cpuid(0x19, 0x11) == abi.GENOA
    assert abi.product_from_cpuid(0x19, 0xA0) == abi.GENOA
    assert abi.product_from_cpuid(0x1A, 0x02) == abi.TURIN
    assert abi.product_from_cpuid(0x17, 0x31) is None
    assert abi.product_from_cpuid(0x19, 0x21) is None


def test_cert_table_round_trip() -> None:
    blobs = [(abi.VCEK_GUID, b"vcek"), (abi.ASK_GUID, b"ask!"), (abi.ARK_GUID, b"ark")]
    table = abi.parse_cert_table(abi.encode_cert_table(blobs))
    assert [(e.guid, e.data) for e in table.entries] == blobs
    assert (table.vcek, table.ask, table.ark, table.vlek) == (b"vcek", b"ask!", b"ark", None)
    attestation = abi.parse_attestation(samples.REPORT + abi.encode_cert_table(blobs))
    assert attestation.certificates == table


def test_cert_table_guids_are_in_rfc_byte_order() -> None:
    raw = abi.encode_cert_table([(abi.VCEK_GUID, b"x")])
    assert raw[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")


def _entry(guid: uuid.UUID, offset: int, length: int) -> bytes:
    return guid.bytes + struct.pack("<II", offset, length)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_entry(abi.VCEK_GUID, 48, 1), "no all-zero terminating entry"),
        (_entry(abi.VCEK_GUID, 24, 1) + bytes(24) + b"x", "points into the table header"),
        (_entry(abi.VCEK_GUID, 48, 2) + bytes(24) + b"x", "runs past the end"),
        (
            _entry(abi.VCEK_GUID, 72, 1) + _entry(abi.VCEK_GUID, 72, 1) + bytes(24) + b"x",
            "repeats GUID",
        ),
        (bytes(10), "truncated"),
    ],
)
def test_cert_table_errors(table: bytes, message: str) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        abi.parse_cert_table(table)


def test_cert_table_keeps_unknown_guids() -> None:
    other = uuid.UUID("ecae0c0f-9502-43b1-afa2-0ae2e0d565b6")
    table = abi.parse_cert_table(abi.encode_cert_table([(other, b"extra")]))
    assert table.get(other) == b"extra"
    assert table.vcek is None
