"""The words the API speaks: platforms, lifecycle states, liveness statuses."""

from __future__ import annotations

import re
from enum import StrEnum


class Platform(StrEnum):
    SEV_SNP = "sev-snp"
    TDX = "tdx"


class State(StrEnum):
    """Provisioning lifecycle."""

    PENDING = "pending"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class Status(StrEnum):
    """Liveness of the CVM's agent."""

    STARTING = "starting"
    RUNNING = "running"
    OFFLINE = "offline"
    STOPPED = "stopped"
    FAILED = "failed"
    INACTIVE = "inactive"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


PROVIDER_NAMES = ("azure", "gcp", "aws", "external", "ultraviolet")

_PLATFORM_ALIASES = {
    "sevsnp": Platform.SEV_SNP,
    "snp": Platform.SEV_SNP,
    "amdsevsnp": Platform.SEV_SNP,
    "tdx": Platform.TDX,
    "inteltdx": Platform.TDX,
}

_SEPARATORS = re.compile(r"[\s_\-]+")


def parse_platform(raw: str) -> Platform | None:
    """Map any accepted spelling (``SEV SNP``, ``sev_snp``, ``Intel TDX``...) to a platform."""
    return _PLATFORM_ALIASES.get(_SEPARATORS.sub("", raw.strip().lower()))


DOMAIN_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
