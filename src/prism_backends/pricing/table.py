"""Loading the packaged price table, and the estimate a CVM is given at create."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from prism_backends.pricing.core import PriceRow, PriceTable, hourly_price, monthly_cost_cents


@lru_cache(maxsize=1)
def packaged_table() -> PriceTable:
    raw = resources.files("prism_backends.pricing").joinpath("prices.toml").read_text("utf-8")
    return parse_table(raw)


def parse_table(text: str) -> PriceTable:
    document = tomllib.loads(text)
    rows = tuple(
        PriceRow(
            provider=row["provider"],
            platform=row["platform"],
            vcpus=int(row["vcpus"]),
            size=row["size"],
            usd_per_hour=Decimal(str(row["usd_per_hour"])),  # never through a binary float
            source=row["source"],
            as_of=row["as_of"],
            region=str(row.get("region", "")),
        )
        for row in document.get("price", [])
    )
    return PriceTable(version=str(document["version"]), rows=rows)


def estimate_cents(
    table: PriceTable,
    provider: str,
    platform: str,
    vcpus: int,
    per_vcpu_override: Decimal | None,
    region: str = "",
) -> int:
    """A configured per-vCPU price wins over the table."""
    if per_vcpu_override is not None:
        return monthly_cost_cents(per_vcpu_override * vcpus)
    return monthly_cost_cents(hourly_price(table, provider, platform, vcpus, region))
