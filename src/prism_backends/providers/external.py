"""The ``external`` provider: the tenant runs the machine and its agent.

Nothing is created anywhere; the CVM is provisioned the moment it is recorded,
and its agent makes it ``running`` by dialling in. The vCPU count is the
tenant's statement, informational only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prism_backends.providers.base import Machine, MachineRequest, MachineState, OwnedMachine
from prism_backends.providers.config import ProviderConfig, ProviderConfigError
from prism_backends.vocabulary import Platform

MAX_VCPUS = 512


class ExternalProvider:
    def __init__(self, max_vcpus: int = MAX_VCPUS) -> None:
        every_count = frozenset(range(1, max_vcpus + 1))
        self._offerings = {Platform.SEV_SNP: every_count, Platform.TDX: every_count}

    @property
    def name(self) -> str:
        return "external"

    @property
    def offerings(self) -> Mapping[Platform, frozenset[int]]:
        return self._offerings

    @property
    def provisions_instantly(self) -> bool:
        return True

    def create(self, request: MachineRequest) -> Machine:
        # The machine is identified by our own id: its agent presents it.
        return Machine(
            provider_machine_id=request.cvm_id,
            state=MachineState.RUNNING,
            agent_url=request.agent_url,
        )

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        return None

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        return Machine(
            provider_machine_id=provider_machine_id or cvm_id, state=MachineState.RUNNING
        )

    def owned_machines(self) -> Iterable[OwnedMachine]:
        return ()  # the tenant's machines are never ours to remove


def make_external(config: ProviderConfig) -> ExternalProvider:
    max_vcpus = config.settings.get("max_vcpus", MAX_VCPUS)
    if not isinstance(max_vcpus, int) or isinstance(max_vcpus, bool) or max_vcpus < 1:
        raise ProviderConfigError(f"{config.source}: [config] max_vcpus must be a positive integer")
    return ExternalProvider(max_vcpus)
