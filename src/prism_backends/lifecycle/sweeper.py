"""The leak sweep: machines that carry our mark but that no live CVM owns.

Leases fence the row, not the provider: a worker frozen past its lease in the
middle of a create can still make a machine after its CVM was deleted. The
sweep is what guarantees that such a machine does not outlive its CVM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from prism_backends.db.engine import unit_of_work
from prism_backends.lifecycle import queue
from prism_backends.observability.instruments import instruments
from prism_backends.observability.providers import timed_call
from prism_backends.providers.base import OwnedMachine, Provider, ProviderError
from prism_backends.providers.registry import Catalog
from prism_backends.vocabulary import State

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepReport:
    examined: int
    removed: int
    failed: int


def is_orphan(machine: OwnedMachine, row: queue.RowState | None) -> bool:
    """No CVM, a deleted one, or a failed one whose cleanup is over: nobody owns it."""
    if row is None:
        return True
    if row.state == State.DELETED.value:
        return True
    return row.state == State.FAILED.value and not row.work_pending


def sweep(catalog: Catalog, sessions: sessionmaker[Session]) -> SweepReport:
    examined = removed = failed = 0
    for entry in catalog.entries():
        provider = entry.provider
        try:
            machines = _list(entry.config.name, provider)
        except ProviderError:
            log.warning("sweep: cannot list %s machines", entry.config.name, exc_info=True)
            failed += 1
            continue
        examined += len(machines)
        with unit_of_work(sessions) as session:
            rows = queue.row_states(session, [machine.cvm_id for machine in machines])
        for machine in machines:
            if not is_orphan(machine, rows.get(machine.cvm_id)):
                continue
            try:
                _remove(entry.config.name, provider, machine)
            except ProviderError:
                log.warning("sweep: cannot remove %s", machine, exc_info=True)
                failed += 1
                continue
            log.warning(
                "sweep: removed %s machine %s left behind by CVM %s",
                entry.config.name,
                machine.provider_machine_id,
                machine.cvm_id,
            )
            removed += 1
            instruments().sweep_removed.labels(entry.config.name).inc()
    return SweepReport(examined=examined, removed=removed, failed=failed)


def _list(provider_name: str, provider: Provider) -> list[OwnedMachine]:
    return timed_call(provider_name, "list_owned", lambda: list(provider.owned_machines()))


def _remove(provider_name: str, provider: Provider, machine: OwnedMachine) -> None:
    timed_call(
        provider_name,
        "delete",
        lambda: provider.delete(machine.cvm_id, machine.provider_machine_id),
    )
