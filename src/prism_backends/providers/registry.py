"""The explicit registry: driver name -> factory, and the deployment's catalog."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from prism_backends.providers.base import Provider, ProviderUnavailable
from prism_backends.providers.config import ProviderConfig, ProviderConfigError, load_configs
from prism_backends.providers.external import make_external
from prism_backends.providers.ultraviolet import make_ultraviolet
from prism_backends.vocabulary import PROVIDER_NAMES, Platform

log = logging.getLogger(__name__)

DriverFactory = Callable[[ProviderConfig], Provider]


# Built-in drivers. A provider whose driver is not here (and not a
# "module:factory" path) cannot be enabled.
def _imported_when_used(module: str, factory: str) -> DriverFactory:
    """A factory whose module (a cloud SDK: seconds to import) loads only when
    a deployment enables that provider."""

    def make(config: ProviderConfig) -> Provider:
        built: Provider = getattr(importlib.import_module(module), factory)(config)
        return built

    return make


DRIVERS: dict[str, DriverFactory] = {
    "aws": _imported_when_used("prism_backends.providers.aws", "make_aws"),
    "azure": _imported_when_used("prism_backends.providers.azure", "make_azure"),
    "external": make_external,
    "gcp": _imported_when_used("prism_backends.providers.gcp", "make_gcp"),
    "ultraviolet": make_ultraviolet,
}


@dataclass(frozen=True)
class CatalogEntry:
    config: ProviderConfig
    provider: Provider


class Catalog:
    """The providers this deployment has enabled, with their configuration."""

    def __init__(self, entries: Mapping[str, CatalogEntry], unavailable: Mapping[str, str]) -> None:
        self._entries = dict(entries)
        self._unavailable = dict(unavailable)

    @property
    def enabled_names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[CatalogEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def get(self, name: str) -> CatalogEntry | None:
        return self._entries.get(name)

    def unavailable(self) -> Mapping[str, str]:
        """Providers configured but left out, with the reason."""
        return dict(self._unavailable)

    def why_unavailable(self, name: str) -> str:
        return self._unavailable.get(name, "no provider file (providers_dir) turns it on")

    def price_region(self, name: str) -> str:
        """Where the provider's machines run, for prices that differ by region."""
        entry = self._entries.get(name)
        if entry is None:
            return ""
        settings = entry.config.settings
        return str(settings.get("region") or settings.get("location") or "")

    def price_override(self, name: str, platform: Platform) -> Decimal | None:
        entry = self._entries.get(name)
        return entry.config.price_per_vcpu_hour.get(platform) if entry else None


def resolve_driver(driver: str) -> DriverFactory | None:
    if driver in DRIVERS:
        return DRIVERS[driver]
    if ":" not in driver:
        return None
    module_name, _, attribute = driver.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ProviderConfigError(f"driver {driver!r} cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise ProviderConfigError(f"driver {driver!r} is not callable")
    return factory  # type: ignore[no-any-return]


def build_catalog(configs: Mapping[str, ProviderConfig], deployment_mark: str = "") -> Catalog:
    entries: dict[str, CatalogEntry] = {}
    unavailable: dict[str, str] = {}
    for name in PROVIDER_NAMES:
        config = configs[name]
        if not config.enabled:
            continue
        factory = resolve_driver(config.driver)
        if factory is None:
            reason = f"its driver {config.driver!r} is not available in this version"
            log.warning("provider %s is configured in %s but %s", name, config.source, reason)
            unavailable[name] = reason
            continue
        config = replace(config, deployment_mark=deployment_mark)
        try:
            entries[name] = CatalogEntry(config=config, provider=factory(config))
        except ProviderUnavailable as exc:
            log.warning("provider %s is configured but unavailable: %s", name, exc)
            unavailable[name] = str(exc)
    return Catalog(entries, unavailable)


def load_catalog(
    providers_dir: Path | None,
    deployment_mark: str = "",
    extra: Mapping[str, ProviderConfig] | None = None,
) -> Catalog:
    """The catalog from the provider files; ``extra`` configurations (a local
    manager's) take the place of a file's."""
    configs = load_configs(providers_dir)
    configs.update(extra or {})
    return build_catalog(configs, deployment_mark)
