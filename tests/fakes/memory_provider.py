"""An in-process fake provider that remembers what it created.

Scripted failures let a test drive each lifecycle path; the ledger lets it
check that nothing was created twice and nothing was left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prism_backends.providers.base import (
    Machine,
    MachineRequest,
    MachineState,
    OwnedMachine,
    ProviderError,
)
from prism_backends.providers.config import ProviderConfig
from prism_backends.vocabulary import Platform


@dataclass
class Ledger:
    live: dict[str, Machine] = field(default_factory=dict)
    creations: dict[str, int] = field(default_factory=dict)
    deletions: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)


class MemoryProvider:
    def __init__(
        self,
        name: str = "aws",
        offerings: Mapping[Platform, frozenset[int]] | None = None,
        *,
        creating_polls: int = 0,
    ) -> None:
        self._name = name
        self._offerings = offerings or {Platform.SEV_SNP: frozenset({2, 4, 8})}
        self.ledger = Ledger()
        self.create_failures: list[ProviderError] = []
        self.delete_failures: list[ProviderError] = []
        # A failure raised after the machine exists: a partial create.
        self.fail_after_create: ProviderError | None = None
        self._creating_polls = creating_polls
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def offerings(self) -> Mapping[Platform, frozenset[int]]:
        return self._offerings

    @property
    def provisions_instantly(self) -> bool:
        return False

    def create(self, request: MachineRequest) -> Machine:
        with self._lock:
            self.ledger.calls.append(("create", request.cvm_id))
            if self.create_failures:
                raise self.create_failures.pop(0)
            machine = self.ledger.live.get(request.cvm_id)
            if machine is None:
                machine = Machine(
                    provider_machine_id=f"i-{request.cvm_id[:8]}", state=MachineState.CREATING
                )
                self.ledger.live[request.cvm_id] = machine
                self.ledger.creations[request.cvm_id] = (
                    self.ledger.creations.get(request.cvm_id, 0) + 1
                )
            if self.fail_after_create is not None:
                failure, self.fail_after_create = self.fail_after_create, None
                raise failure
            polls = self._polls.get(request.cvm_id, 0)
            self._polls[request.cvm_id] = polls + 1
            if polls < self._creating_polls:
                return machine
            running = Machine(machine.provider_machine_id, MachineState.RUNNING)
            self.ledger.live[request.cvm_id] = running
            return running

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        with self._lock:
            self.ledger.calls.append(("delete", cvm_id))
            if self.delete_failures:
                raise self.delete_failures.pop(0)
            if self.ledger.live.pop(cvm_id, None) is not None:
                self.ledger.deletions.append(cvm_id)

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        with self._lock:
            return self.ledger.live.get(cvm_id)

    def owned_machines(self) -> Iterable[OwnedMachine]:
        with self._lock:
            return [
                OwnedMachine(cvm_id, machine.provider_machine_id)
                for cvm_id, machine in self.ledger.live.items()
            ]


# The instance a providers-directory TOML with
# driver = "tests.fakes.memory_provider:shared" resolves to, per test.
SHARED: dict[str, MemoryProvider] = {}


def shared(config: ProviderConfig) -> MemoryProvider:
    provider = SHARED.get(config.name)
    if provider is None:
        provider = MemoryProvider(config.name)
        SHARED[config.name] = provider
    return provider
