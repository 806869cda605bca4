"""The pure pricing rules: which row prices a size, 730 hours, cents, dollars."""

from __future__ import annotations

from decimal import Decimal

import pytest

from prism_backends.pricing.core import (
    HOURS_PER_MONTH,
    PriceRow,
    PriceTable,
    format_usd,
    hourly_price,
    monthly_cost_cents,
)


def _row(provider: str, platform: str, vcpus: int, usd_per_hour: str) -> PriceRow:
    return PriceRow(
        provider=provider,
        platform=platform,
        vcpus=vcpus,
        size=f"{provider}-{platform}-{vcpus}",
        usd_per_hour=Decimal(usd_per_hour),
        source="test",
        as_of="2026-08",
    )


TABLE = PriceTable(
    version="test",
    rows=(
        _row("azure", "sev-snp", 2, "0.10"),
        _row("azure", "sev-snp", 8, "0.48"),  # 0.06 per vCPU: not the 2-vCPU rate
        _row("azure", "tdx", 4, "0.20"),
        _row("gcp", "sev-snp", 2, "0.09"),
        _row("gcp", "sev-snp", 6, "0.30"),  # 0.05 per vCPU
    ),
)


# --- hourly_price ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "platform", "vcpus", "expected"),
    [
        ("azure", "sev-snp", 2, "0.10"),
        ("azure", "sev-snp", 8, "0.48"),
        ("azure", "tdx", 4, "0.20"),
        ("gcp", "sev-snp", 6, "0.30"),
    ],
)
def test_exact_row_gives_its_price(provider: str, platform: str, vcpus: int, expected: str) -> None:
    assert hourly_price(TABLE, provider, platform, vcpus) == Decimal(expected)


@pytest.mark.parametrize(
    ("vcpus", "expected"),
    [
        (1, "0.05"),  # nearest is 2: 0.05 per vCPU
        (3, "0.15"),  # nearest is 2
        (4, "0.20"),  # nearest is 2 (distance 2) over 8 (distance 4)
        (6, "0.36"),  # nearest is 8 (distance 2) over 2 (distance 4): 0.06 per vCPU
        (7, "0.42"),  # nearest is 8
        (16, "0.96"),  # beyond the largest row: scales from it
        (96, "5.76"),
    ],
)
def test_other_sizes_scale_per_vcpu_from_the_nearest_row(vcpus: int, expected: str) -> None:
    assert hourly_price(TABLE, "azure", "sev-snp", vcpus) == Decimal(expected)


def test_equally_near_rows_tie_to_the_smaller() -> None:
    # 4 vCPUs is 2 away from both the 2-vCPU row (0.045/vCPU) and the 6-vCPU row (0.05/vCPU).
    assert hourly_price(TABLE, "gcp", "sev-snp", 4) == Decimal("0.18")


def test_rows_of_another_platform_or_provider_are_never_used() -> None:
    # azure/tdx has only a 4-vCPU row; azure/sev-snp's 8-vCPU row must not price 8 TDX vCPUs.
    assert hourly_price(TABLE, "azure", "tdx", 8) == Decimal("0.40")
    # gcp has no TDX row at all, although azure does.
    assert hourly_price(TABLE, "gcp", "tdx", 4) is None


@pytest.mark.parametrize(
    ("provider", "platform"),
    [("aws", "sev-snp"), ("ultraviolet", "tdx"), ("external", "sev-snp"), ("gcp", "tdx")],
)
def test_no_row_for_provider_and_platform_is_unpriced(provider: str, platform: str) -> None:
    assert hourly_price(TABLE, provider, platform, 2) is None


def test_empty_table_prices_nothing() -> None:
    assert hourly_price(PriceTable(version="empty", rows=()), "azure", "sev-snp", 2) is None


# --- monthly_cost_cents -----------------------------------------------------------


def test_a_month_is_730_hours() -> None:
    assert HOURS_PER_MONTH == 730
    assert monthly_cost_cents(Decimal("1")) == 730_00
    assert monthly_cost_cents(Decimal("0.10")) == 73_00


def test_unpriced_costs_nothing() -> None:
    assert monthly_cost_cents(None) == 0
    assert format_usd(monthly_cost_cents(None)) == "$0.00"


def test_free_costs_nothing() -> None:
    assert monthly_cost_cents(Decimal("0")) == 0


@pytest.mark.parametrize(
    ("hourly", "cents"),
    [
        # 0.0005 * 730 = 0.365: half up gives 0.37 (banker's rounding would give 0.36).
        ("0.0005", 37),
        # 0.0015 * 730 = 1.095 -> 1.10
        ("0.0015", 110),
        # 0.1145 * 730 = 83.585 -> 83.59 (half-even would give 83.58)
        ("0.1145", 8359),
        # 0.00001 * 730 = 0.0073 -> 0.01; 0.000006 * 730 = 0.00438 -> 0.00
        ("0.00001", 1),
        ("0.000006", 0),
        # 0.086 * 730 = 62.78 exactly
        ("0.086", 6278),
        # 0.09504 * 730 = 69.3792 -> 69.38
        ("0.09504", 6938),
    ],
)
def test_rounds_half_up_to_whole_cents(hourly: str, cents: int) -> None:
    assert monthly_cost_cents(Decimal(hourly)) == cents


def test_non_terminating_per_vcpu_scaling_still_rounds_to_cents() -> None:
    # 1.00/3 per vCPU, times 3 vCPUs, must cost exactly what the 3-vCPU machine costs.
    table = PriceTable(version="t", rows=(_row("azure", "tdx", 3, "1.00"),))
    hourly = hourly_price(table, "azure", "tdx", 6)
    assert hourly is not None
    assert monthly_cost_cents(hourly) == 1460_00


# --- format_usd -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (0, "$0.00"),
        (1, "$0.01"),
        (9, "$0.09"),
        (10, "$0.10"),
        (99, "$0.99"),
        (100, "$1.00"),
        (6278, "$62.78"),
        (1234, "$12.34"),
        (123_456_789, "$1234567.89"),
    ],
)
def test_format_usd(cents: int, text: str) -> None:
    assert format_usd(cents) == text
