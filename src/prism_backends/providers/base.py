"""The one interface every provider driver implements, and its vocabulary.

A driver turns "this CVM should exist" into a machine at its provider and back.
Every call is idempotent and keyed by our CVM id, so a worker that crashed
mid-call can simply call again. Drivers translate their SDK's failures into
``RetryableProviderError`` or ``TerminalProviderError`` at their edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol, runtime_checkable

from prism_backends.vocabulary import LogLevel, Platform


class ProviderError(Exception):
    """A provider call failed; subclasses say whether trying again can help."""


class RetryableProviderError(ProviderError):
    """Capacity, quota, throttling, timeouts: the same call may succeed later."""


class TerminalProviderError(ProviderError):
    """Bad image, bad credentials, unsupported size: retrying cannot help."""


class ProviderUnavailable(Exception):
    """Raised by a driver factory: configured, but not usable now (no manager
    answers, no credentials); the provider is left out of the catalog, saying why."""


class MachineState(StrEnum):
    """A provider's view of a machine, mapped into our words inside each driver."""

    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AgentBootstrap:
    """What the machine's agent needs to dial in: its certificate and key, the
    agents CA, and the endpoint's address. Handed to drivers that start the
    agent themselves (user data, a manager's CreateVm); never logged."""

    server_url: str
    ca_cert_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class MachineRequest:
    """What a driver needs to create (or find again) the machine of one CVM."""

    cvm_id: str
    domain_id: str
    name: str
    platform: Platform
    vcpus: int
    agent_log_level: LogLevel
    agent_url: str = ""
    agent: AgentBootstrap | None = None
    # Failed attempts so far: a cloud whose request ids replay a failed
    # operation (GCP) derives a fresh id per attempt; a crashed attempt was
    # never counted, so its retry reuses the id.
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine as its provider reports it.

    ``attestation_policy`` is the provider's own reference for this machine
    (a host manager computes it from what it launched); ``confidential`` is
    False when the provider ran it without SEV-SNP or TDX (development hosts),
    with the reason in ``detail``.
    """

    provider_machine_id: str
    state: MachineState
    agent_url: str = ""
    detail: str = ""
    attestation_policy: bytes | None = None
    confidential: bool = True


@dataclass(frozen=True, slots=True)
class OwnedMachine:
    """A machine at the provider that carries our mark (tag, label, name prefix)."""

    cvm_id: str
    provider_machine_id: str


@runtime_checkable
class Provider(Protocol):
    """A place CVMs run. Implementations live one per module in this package."""

    @property
    def name(self) -> str: ...

    @property
    def offerings(self) -> Mapping[Platform, frozenset[int]]:
        """vCPU counts offered per platform; a platform absent here is not offered."""
        ...

    @property
    def provisions_instantly(self) -> bool:
        """True when creating needs no remote call (the tenant runs the machine)."""
        ...

    def create(self, request: MachineRequest) -> Machine:
        """Create the machine, or return the one already created for ``request.cvm_id``."""
        ...

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        """Remove the machine; a machine that is already gone counts as removed."""
        ...

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        """The machine as the provider sees it now, or None when it does not exist."""
        ...

    def owned_machines(self) -> Iterable[OwnedMachine]:
        """Every live machine this deployment created there, for the leak sweep."""
        ...


class RemoteDriver:
    """What every driver that makes machines elsewhere has alike: a fixed name,
    the offerings it was configured (or told) with, and creates that need a
    remote call. The clouds' and the host managers' drivers derive from it."""

    provider_name: ClassVar[str]

    def __init__(self, offerings: Mapping[Platform, frozenset[int]]) -> None:
        self._offerings = dict(offerings)

    @property
    def name(self) -> str:
        return self.provider_name

    @property
    def offerings(self) -> Mapping[Platform, frozenset[int]]:
        return self._offerings

    @property
    def provisions_instantly(self) -> bool:
        return False
