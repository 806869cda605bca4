"""Monthly cost estimates: a pure function of a price table and a request.

No I/O here: the table is loaded elsewhere (``pricing.table``) and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

HOURS_PER_MONTH = 730  # Infracost's convention: 365 * 24 / 12.
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One published on-demand price: a machine size at a provider, per hour."""

    provider: str
    platform: str
    vcpus: int
    size: str
    usd_per_hour: Decimal
    source: str
    as_of: str
    region: str = ""


@dataclass(frozen=True, slots=True)
class PriceTable:
    version: str
    rows: tuple[PriceRow, ...]


def hourly_price(
    table: PriceTable, provider: str, platform: str, vcpus: int, region: str = ""
) -> Decimal | None:
    """The hourly USD price of ``vcpus`` on ``provider``/``platform`` in ``region``.

    A region without rows is priced at the provider's reference region (the
    first region the table lists for it). An exact row wins. Otherwise the
    price scales per vCPU from the row with the nearest vCPU count (ties to
    the smaller). None when the table has no row at all for the provider and
    platform.
    """
    candidates = [
        row for row in table.rows if row.provider == provider and row.platform == platform
    ]
    if not candidates:
        return None
    priced_region = region if any(row.region == region for row in candidates) else None
    if priced_region is None:
        priced_region = candidates[0].region
    candidates = [row for row in candidates if row.region == priced_region]
    nearest = min(candidates, key=lambda row: (abs(row.vcpus - vcpus), row.vcpus))
    if nearest.vcpus == vcpus:
        return nearest.usd_per_hour
    return nearest.usd_per_hour / nearest.vcpus * vcpus


def monthly_cost_cents(hourly_usd: Decimal | None) -> int:
    """Hourly USD price times 730 hours, in whole cents (half up); 0 when unpriced."""
    if hourly_usd is None:
        return 0
    monthly = (hourly_usd * HOURS_PER_MONTH).quantize(CENT, rounding=ROUND_HALF_UP)
    return int(monthly * 100)


def format_usd(cents: int) -> str:
    """``1234`` -> ``"$12.34"``."""
    return f"${cents // 100}.{cents % 100:02d}"
