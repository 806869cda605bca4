"""Provider configuration: one TOML file per provider, in the shape Prism deploys.

```toml
name = "gcp"
enabled = true
# driver = "gcp"              # default: the name; or "package.module:factory"
[config]                      # handed to the driver as is
project_id = "my-project"
region = "us-central1"
vcpusSEV = [2, 4, 8]
vcpusTDX = [4, 8]
[pricing]                     # optional: override the price table (USD per vCPU-hour)
sev-snp = 0.0
tdx = 0.0
[attestation_policy]          # optional: reference policy files per platform
sev-snp = "/etc/prism/snp-policy.json"
corim_keys = ["/etc/prism/corim-signer.pem"]  # keys signed CoRIM policies must verify with
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from prism_backends.vocabulary import PROVIDER_NAMES, Platform, parse_platform


class ProviderConfigError(ValueError):
    """A provider file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    enabled: bool
    driver: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    price_per_vcpu_hour: Mapping[Platform, Decimal] = field(default_factory=dict)
    attestation_policies: Mapping[Platform, bytes] = field(default_factory=dict)
    # Public keys a signed CoRIM policy of this provider must verify with.
    corim_keys: tuple[ec.EllipticCurvePublicKey, ...] = ()
    source: str = "built-in default"
    # Identifies this deployment at a shared provider (the agents CA's key id),
    # so a leak sweep removes only machines this deployment made. Set by the catalog.
    deployment_mark: str = ""


# Prism's own offerings (the contract lists them); a file may replace them.
DEFAULT_VCPUS: dict[str, dict[str, list[int]]] = {
    "azure": {
        "vcpusSEV": [2, 4, 8, 16, 32, 48, 64, 96],
        "vcpusTDX": [2, 4, 8, 16, 32, 48, 64, 96, 128],
    },
    "gcp": {
        "vcpusSEV": [2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224],
        "vcpusTDX": [4, 8, 22, 44, 88, 176],
    },
    "aws": {"vcpusSEV": [2, 4, 8, 16, 32, 48, 64, 96, 128, 192], "vcpusTDX": []},
    "ultraviolet": {"vcpusSEV": [1, 2, 4, 8, 16], "vcpusTDX": [1, 2, 4, 8, 16]},
    "external": {},
}


def default_configs() -> dict[str, ProviderConfig]:
    """Every known provider, with only ``external`` enabled."""
    return {
        name: ProviderConfig(
            name=name, enabled=name == "external", driver=name, settings=DEFAULT_VCPUS[name]
        )
        for name in PROVIDER_NAMES
    }


def load_configs(directory: Path | None) -> dict[str, ProviderConfig]:
    """Defaults, overridden by every ``*.toml`` file in ``directory``."""
    configs = default_configs()
    if directory is None:
        return configs
    if not directory.is_dir():
        raise ProviderConfigError(f"providers directory {directory} does not exist")
    for path in sorted(directory.glob("*.toml")):
        config = parse_file(path)
        configs[config.name] = config
    return configs


def parse_file(path: Path) -> ProviderConfig:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProviderConfigError(f"{path}: {exc}") from exc
    return parse_document(document, source=str(path), base_dir=path.parent)


def parse_document(document: Mapping[str, Any], *, source: str, base_dir: Path) -> ProviderConfig:
    name = document.get("name")
    if not isinstance(name, str) or name.lower() not in PROVIDER_NAMES:
        raise ProviderConfigError(
            f"{source}: 'name' must be one of {', '.join(PROVIDER_NAMES)}, got {name!r}"
        )
    name = name.lower()
    enabled = document.get("enabled", True)
    driver = document.get("driver", name)
    settings = document.get("config", {})
    if not isinstance(enabled, bool):
        raise ProviderConfigError(f"{source}: 'enabled' must be true or false")
    if not isinstance(driver, str) or not driver:
        raise ProviderConfigError(f"{source}: 'driver' must be a non-empty string")
    if not isinstance(settings, dict):
        raise ProviderConfigError(f"{source}: [config] must be a table")
    merged = {**DEFAULT_VCPUS[name], **settings}
    return ProviderConfig(
        name=name,
        enabled=enabled,
        driver=driver,
        settings=merged,
        price_per_vcpu_hour=_parse_prices(document.get("pricing", {}), source),
        attestation_policies=_read_policies(
            document.get("attestation_policy", {}), source, base_dir
        ),
        corim_keys=_read_corim_keys(document.get("attestation_policy", {}), source, base_dir),
        source=source,
    )


def _platform_key(raw: str, source: str, table: str) -> Platform:
    platform = parse_platform(raw)
    if platform is None:
        raise ProviderConfigError(f"{source}: [{table}] key {raw!r} is not sev-snp or tdx")
    return platform


def _parse_prices(table: Any, source: str) -> dict[Platform, Decimal]:
    if not isinstance(table, dict):
        raise ProviderConfigError(f"{source}: [pricing] must be a table")
    prices: dict[Platform, Decimal] = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ProviderConfigError(f"{source}: [pricing] {key} must be a number >= 0")
        prices[_platform_key(key, source, "pricing")] = Decimal(str(value))
    return prices


def _read_corim_keys(
    table: Any, source: str, base_dir: Path
) -> tuple[ec.EllipticCurvePublicKey, ...]:
    """``corim_keys = ["key.pem", ...]``: EC public keys or certificates, PEM."""
    paths = table.get("corim_keys", []) if isinstance(table, dict) else []
    where = f"{source}: [attestation_policy] corim_keys"
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ProviderConfigError(f"{where} must list PEM file paths")
    keys = []
    for raw in paths:
        path = Path(raw) if Path(raw).is_absolute() else base_dir / raw
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProviderConfigError(f"{where}: {exc}") from exc
        try:
            key: Any = (
                x509.load_pem_x509_certificate(data).public_key()
                if b"CERTIFICATE" in data
                else serialization.load_pem_public_key(data)
            )
        except ValueError as exc:
            raise ProviderConfigError(f"{where}: {path} is not a PEM key or certificate") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ProviderConfigError(f"{where}: {path} is not an EC key (CoRIMs are ES256/384)")
        keys.append(key)
    return tuple(keys)


def _read_policies(table: Any, source: str, base_dir: Path) -> dict[Platform, bytes]:
    if not isinstance(table, dict):
        raise ProviderConfigError(f"{source}: [attestation_policy] must be a table")
    policies: dict[Platform, bytes] = {}
    for key, value in table.items():
        if key == "corim_keys":
            continue
        if not isinstance(value, str):
            raise ProviderConfigError(f"{source}: [attestation_policy] {key} must be a file path")
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        try:
            policies[_platform_key(key, source, "attestation_policy")] = path.read_bytes()
        except OSError as exc:
            raise ProviderConfigError(f"{source}: [attestation_policy] {key}: {exc}") from exc
    return policies


def vcpu_list(settings: Mapping[str, Any], key: str, source: str) -> frozenset[int]:
    """Read one of Prism's ``vcpusSEV`` / ``vcpusTDX`` lists, checking its shape."""
    raw = settings.get(key, [])
    if not isinstance(raw, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in raw
    ):
        raise ProviderConfigError(f"{source}: [config] {key} must be a list of positive integers")
    return frozenset(raw)
