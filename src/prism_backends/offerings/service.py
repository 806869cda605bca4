"""The offerings a principal may choose from. No store: the catalog and the
price table are in memory."""

from __future__ import annotations

from prism_backends.auth.permissions import Permission
from prism_backends.auth.principal import Principal
from prism_backends.offerings.schemas import (
    Offerings,
    PlatformOffer,
    ProviderOffer,
    UnavailableProvider,
    VcpuOffer,
)
from prism_backends.pricing.core import PriceTable, format_usd
from prism_backends.pricing.table import estimate_cents
from prism_backends.providers.registry import Catalog, CatalogEntry


def offerings(
    principal: Principal, *, catalog: Catalog, prices: PriceTable, domain_id: str
) -> Offerings:
    principal.require(domain_id, Permission.READ)
    return Offerings(
        providers=[_provider_offer(catalog, prices, entry) for entry in catalog.entries()],
        unavailable=[
            UnavailableProvider(name=name, reason=reason)
            for name, reason in sorted(catalog.unavailable().items())
        ],
    )


def _provider_offer(catalog: Catalog, prices: PriceTable, entry: CatalogEntry) -> ProviderOffer:
    name = entry.config.name
    region = catalog.price_region(name)
    platforms = []
    for platform, counts in sorted(entry.provider.offerings.items()):
        override = catalog.price_override(name, platform)
        platforms.append(
            PlatformOffer(
                cc_platform=platform.value,
                vcpus=[
                    VcpuOffer(
                        vcpus=count,
                        monthly_cost_estimate=format_usd(
                            estimate_cents(prices, name, platform.value, count, override, region)
                        ),
                    )
                    for count in sorted(counts)
                ],
            )
        )
    return ProviderOffer(
        name=name,
        provisions_instantly=entry.provider.provisions_instantly,
        platforms=platforms,
    )
