"""The packaged price table, and the estimate a CVM is given when it is created."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from prism_backends.pricing.core import PriceTable, format_usd
from prism_backends.pricing.table import estimate_cents, packaged_table, parse_table
from prism_backends.providers.config import DEFAULT_VCPUS
from prism_backends.vocabulary import PROVIDER_NAMES, Platform


def _table_text(*rows: str, version: str = '"t-1"') -> str:
    return f"version = {version}\n" + "".join(f"\n[[price]]\n{row}\n" for row in rows)


def _row_text(
    provider: str = "azure",
    platform: str = "sev-snp",
    vcpus: int = 2,
    usd_per_hour: str = '"0.10"',
) -> str:
    return (
        f'provider = "{provider}"\nplatform = "{platform}"\nvcpus = {vcpus}\n'
        f'size = "test size"\nusd_per_hour = {usd_per_hour}\n'
        f'source = "test source"\nas_of = "2026-08"'
    )


# --- the packaged table ---------------------------------------------------------


@pytest.fixture(scope="module")
def packaged() -> PriceTable:
    return packaged_table()


def test_packaged_table_loads_with_a_version_and_rows(packaged: PriceTable) -> None:
    assert packaged.version.strip()
    assert len(packaged.rows) >= 1


def test_every_packaged_row_says_where_and_when_its_price_is_from(packaged: PriceTable) -> None:
    for row in packaged.rows:
        assert row.source.strip(), row
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", row.as_of), row


def test_every_packaged_row_is_for_a_known_offering(packaged: PriceTable) -> None:
    platforms = {platform.value for platform in Platform}
    for row in packaged.rows:
        assert row.provider in PROVIDER_NAMES, row
        assert row.platform in platforms, row
        assert row.vcpus > 0, row
        assert row.usd_per_hour > 0, row
        assert row.size.strip(), row


def test_packaged_table_has_one_row_per_size_and_region(packaged: PriceTable) -> None:
    keys = [(row.provider, row.platform, row.region, row.vcpus) for row in packaged.rows]
    assert len(keys) == len(set(keys))


def _driver_sizes() -> dict[tuple[str, str], dict[int, str]]:
    from prism_backends.providers import aws, azure

    return {
        ("aws", "sev-snp"): aws.SIZES,
        ("azure", "sev-snp"): azure.SIZES[Platform.SEV_SNP],
        ("azure", "tdx"): azure.SIZES[Platform.TDX],
        ("gcp", "sev-snp"): {n: f"n2d-standard-{n}" for n in DEFAULT_VCPUS["gcp"]["vcpusSEV"]},
        ("gcp", "tdx"): {n: f"c3-standard-{n}" for n in DEFAULT_VCPUS["gcp"]["vcpusTDX"]},
    }


@pytest.mark.parametrize(("provider", "platform"), list(_driver_sizes()))
def test_every_size_a_driver_chooses_has_a_row_in_every_priced_region(
    packaged: PriceTable, provider: str, platform: str
) -> None:
    sizes = _driver_sizes()[(provider, platform)]
    rows = [r for r in packaged.rows if (r.provider, r.platform) == (provider, platform)]
    regions = {row.region for row in rows}
    assert len(regions) >= 2, "a reference region and at least one other"
    for region in regions:
        priced = {row.vcpus: row.size for row in rows if row.region == region}
        assert set(priced) == set(sizes), (region, set(sizes) ^ set(priced))
        for vcpus, size in sizes.items():
            assert priced[vcpus].startswith(size), (region, vcpus, priced[vcpus])


@pytest.mark.parametrize(
    ("provider", "platform", "vcpus", "region", "usd"),
    [
        # 0.09504 / 2 * 16 = 0.76032 * 730 = 555.0336
        ("aws", "sev-snp", 16, "us-east-2", "$555.03"),
        # 0.10593 / 2 * 2 * 730 = 77.3289
        ("aws", "sev-snp", 2, "eu-west-1", "$77.33"),
        # 0.0963 / 2 * 8 = 0.3852 * 730 = 281.196
        ("azure", "sev-snp", 8, "westeurope", "$281.20"),
        # 0.101 / 2 * 128 = 6.464 * 730 = 4718.72
        ("azure", "tdx", 128, "eastus", "$4718.72"),
        # 0.229 / 4 * 22 = 1.2595 * 730 = 919.435 -> 919.44 (half up)
        ("gcp", "tdx", 22, "us-central1", "$919.44"),
        # 0.1022 / 2 * 4 = 0.2044 * 730 = 149.212
        ("gcp", "sev-snp", 4, "europe-west4", "$149.21"),
        # a region without rows: the reference region's price (us-central1)
        ("gcp", "sev-snp", 2, "asia-east1", "$67.82"),
        ("azure", "sev-snp", 2, "", "$62.78"),
    ],
)
def test_estimates_by_region(
    packaged: PriceTable, provider: str, platform: str, vcpus: int, region: str, usd: str
) -> None:
    cents = estimate_cents(packaged, provider, platform, vcpus, None, region)
    assert format_usd(cents) == usd


@pytest.mark.parametrize(
    ("provider", "platform", "vcpus", "usd"),
    [
        # exact rows: 0.086 * 730, 0.09504 * 730 = 69.3792
        ("azure", "sev-snp", 2, "$62.78"),
        ("aws", "sev-snp", 2, "$69.38"),
        # scaled: 0.086 / 2 * 4 * 730 = 125.56
        ("azure", "sev-snp", 4, "$125.56"),
        # scaled down from the 4-vCPU row: 0.229 / 4 * 2 * 730 = 83.585 -> 83.59 (half up)
        ("gcp", "tdx", 2, "$83.59"),
        # no row at all
        ("aws", "tdx", 2, "$0.00"),
        ("ultraviolet", "sev-snp", 4, "$0.00"),
        ("external", "tdx", 8, "$0.00"),
    ],
)
def test_packaged_estimates(
    packaged: PriceTable, provider: str, platform: str, vcpus: int, usd: str
) -> None:
    assert format_usd(estimate_cents(packaged, provider, platform, vcpus, None)) == usd


# --- configured per-vCPU overrides ------------------------------------------------


def test_configured_per_vcpu_price_wins_over_the_table(packaged: PriceTable) -> None:
    # The table would say $125.56; 4 vCPUs at 0.01 per vCPU-hour is 0.04 * 730 = 29.20.
    assert estimate_cents(packaged, "azure", "sev-snp", 4, Decimal("0.01")) == 2920


def test_configured_price_of_zero_means_free_not_unset(packaged: PriceTable) -> None:
    assert estimate_cents(packaged, "azure", "sev-snp", 4, Decimal("0")) == 0


def test_configured_price_applies_where_the_table_has_no_row(packaged: PriceTable) -> None:
    # 16 vCPUs at 0.0125 = 0.2 per hour, 146.00 a month
    assert estimate_cents(packaged, "ultraviolet", "tdx", 16, Decimal("0.0125")) == 146_00


def test_configured_price_rounds_half_up(packaged: PriceTable) -> None:
    # 1 vCPU at 0.0005 = 0.365 a month -> 0.37
    assert estimate_cents(packaged, "external", "sev-snp", 1, Decimal("0.0005")) == 37


# --- parse_table ------------------------------------------------------------------


def test_parse_table_reads_every_field() -> None:
    table = parse_table(_table_text(_row_text("gcp", "tdx", 4, '"0.229"'), version='"v-9"'))

    assert table.version == "v-9"
    (row,) = table.rows
    assert (row.provider, row.platform, row.vcpus) == ("gcp", "tdx", 4)
    assert row.usd_per_hour == Decimal("0.229")
    assert (row.size, row.source, row.as_of) == ("test size", "test source", "2026-08")


def test_table_without_rows_prices_nothing() -> None:
    table = parse_table(_table_text())
    assert table.rows == ()
    assert estimate_cents(table, "azure", "sev-snp", 2, None) == 0


def test_price_written_as_a_toml_number_is_read_as_written() -> None:
    # 0.0045 * 730 = 3.285 -> $3.29. Read through a binary float it is
    # 0.004499999..., which would round to $3.28.
    table = parse_table(_table_text(_row_text("azure", "tdx", 1, "0.0045")))

    assert table.rows[0].usd_per_hour == Decimal("0.0045")
    assert estimate_cents(table, "azure", "tdx", 1, None) == 329
