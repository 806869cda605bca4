"""The lifecycle engine against an in-memory provider: each path of convergence."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from prism_backends.config import Settings
from prism_backends.cvms.models import CVM
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.lifecycle import queue
from prism_backends.lifecycle.backoff import retry_delay
from prism_backends.lifecycle.worker import LifecycleWorkers
from prism_backends.providers.base import RetryableProviderError, TerminalProviderError
from prism_backends.providers.config import default_configs
from prism_backends.providers.registry import Catalog, CatalogEntry
from prism_backends.runtime import Runtime
from tests.factories import cvm_row, pending_cvm
from tests.fakes.memory_provider import MemoryProvider

FAST = {"retry_base_seconds": 0.001, "retry_max_seconds": 0.002, "lease_seconds": 30.0}


@pytest.fixture
def provider() -> MemoryProvider:
    return MemoryProvider("aws")


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def make_rt(make_settings: Callable[..., Settings]) -> Iterator[RuntimeFactory]:
    """``make_rt(provider, **settings)``: a runtime whose only provider is ``provider``."""
    made: list[Runtime] = []

    def _make(provider: MemoryProvider, **overrides: Any) -> Runtime:
        runtime = Runtime(make_settings(**{**FAST, **overrides}))
        runtime.catalog = Catalog({"aws": CatalogEntry(default_configs()["aws"], provider)}, {})
        made.append(runtime)
        return runtime

    yield _make
    for runtime in made:
        runtime.close()


@pytest.fixture
def rt(make_rt: RuntimeFactory, provider: MemoryProvider) -> Runtime:
    return make_rt(provider)


def _drain(rt: Runtime, *, steps: int = 50) -> int:
    workers = LifecycleWorkers(rt.settings, rt.sessions, rt.catalog)
    for done in range(steps):
        if not workers.run_once():
            # Retries are scheduled a moment ahead: wait them out, then look again.
            with unit_of_work(rt.sessions) as session:
                waiting = session.scalars(
                    select(CVM.id).where(CVM.next_attempt_at.is_not(None))
                ).first()
            if waiting is None:
                return done
    raise AssertionError("did not converge")


def test_pending_cvm_is_provisioned_once(rt: Runtime, provider: MemoryProvider) -> None:
    cvm_id = pending_cvm(rt.sessions)
    _drain(rt)
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.status, row.error) == ("provisioned", "starting", "")
    assert row.cvm_id == f"i-{cvm_id[:8]}"
    assert row.next_attempt_at is None and row.lease_owner is None
    assert provider.ledger.creations == {cvm_id: 1}


def test_machine_still_creating_is_polled_until_running(
    make_rt: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prism_backends.lifecycle import reconciler

    monkeypatch.setattr(reconciler, "CREATION_POLL_SECONDS", 0.0)
    slow = MemoryProvider("aws", creating_polls=2)
    rt = make_rt(slow)
    cvm_id = pending_cvm(rt.sessions)
    workers = LifecycleWorkers(rt.settings, rt.sessions, rt.catalog)
    assert workers.run_once()
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.cvm_id) == ("provisioning", f"i-{cvm_id[:8]}")
    _drain(rt)
    assert cvm_row(rt.sessions, cvm_id).state == "provisioned"
    assert slow.ledger.creations == {cvm_id: 1}


def test_a_machine_creating_past_the_timeout_is_retried_then_given_up_and_removed(
    make_rt: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prism_backends.lifecycle import reconciler

    monkeypatch.setattr(reconciler, "CREATION_POLL_SECONDS", 0.0)
    stuck = MemoryProvider("aws", creating_polls=1_000_000)
    rt = make_rt(stuck, create_timeout_seconds=0.001, retry_give_up_seconds=3600)
    cvm_id = pending_cvm(rt.sessions)
    workers = LifecycleWorkers(rt.settings, rt.sessions, rt.catalog)
    workers.run_once()
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.attempts) == ("provisioning", 1)
    assert "still being created" in row.error and row.first_failure_at is not None

    impatient = rt.settings.model_copy(update={"retry_give_up_seconds": 0.001})
    workers = LifecycleWorkers(impatient, rt.sessions, rt.catalog)
    for _ in range(50):
        workers.run_once()
        if cvm_row(rt.sessions, cvm_id).next_attempt_at is None:
            break
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.status) == ("failed", "failed")
    assert "gave up" in row.error and "still being created" in row.error
    assert stuck.ledger.creations == {cvm_id: 1}  # never made twice ...
    assert stuck.ledger.live == {}  # ... and the machine that never came up is removed


def test_retryable_failures_back_off_then_succeed(rt: Runtime, provider: MemoryProvider) -> None:
    provider.create_failures = [RetryableProviderError("ZonalAllocationFailed")] * 3
    cvm_id = pending_cvm(rt.sessions)
    workers = LifecycleWorkers(rt.settings, rt.sessions, rt.catalog)
    workers.run_once()
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.attempts) == ("provisioning", 1)
    assert row.error == "retrying: ZonalAllocationFailed"
    assert row.next_attempt_at is not None and row.lease_owner is None
    _drain(rt)
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.attempts, row.error) == ("provisioned", 0, "")


def test_retryable_failures_give_up_after_the_configured_time(
    make_rt: RuntimeFactory, provider: MemoryProvider
) -> None:
    rt = make_rt(provider, retry_give_up_seconds=0.001)
    provider.create_failures = [RetryableProviderError("QuotaExceeded")] * 100
    cvm_id = pending_cvm(rt.sessions)
    _drain(rt)
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.status) == ("failed", "failed")
    assert "gave up" in row.error and "QuotaExceeded" in row.error


def test_terminal_failure_fails_the_cvm_and_cleans_up_a_partial_machine(
    rt: Runtime, provider: MemoryProvider
) -> None:
    provider.fail_after_create = TerminalProviderError("InvalidAMIID.NotFound")
    cvm_id = pending_cvm(rt.sessions)
    _drain(rt)
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.status, row.error) == ("failed", "failed", "InvalidAMIID.NotFound")
    assert row.next_attempt_at is None
    assert provider.ledger.live == {}  # nothing leaked
    assert provider.ledger.deletions == [cvm_id]


def test_delete_tears_down_and_retries_until_done(
    rt: Runtime, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    cvm_id = pending_cvm(rt.sessions)
    _drain(rt)
    provider.delete_failures = [RetryableProviderError("Throttling"), TerminalProviderError("x")]
    with unit_of_work(rt.sessions) as session:
        from prism_backends.cvms import repository

        assert repository.mark_deleted(session, "dom-1", cvm_id, utcnow())
    with caplog.at_level(logging.INFO, logger="prism_backends.lifecycle.worker"):
        _drain(rt)
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.state, row.status) == ("deleted", "inactive")
    assert row.deleted_at is not None
    assert provider.ledger.live == {}
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"CVM {cvm_id}")]
    assert said == [
        f"CVM {cvm_id} (aws): retry: Throttling",
        f"CVM {cvm_id} (aws): retry: x",
        f"CVM {cvm_id} (aws): deleted",
    ]


def test_delete_during_provisioning_wins(rt: Runtime, provider: MemoryProvider) -> None:
    cvm_id = pending_cvm(rt.sessions)
    workers = LifecycleWorkers(rt.settings, rt.sessions, rt.catalog)
    with unit_of_work(rt.sessions) as session:
        (work,) = queue.claim(session, owner=workers.owner, now=utcnow(), lease_seconds=30, limit=1)
    # The tenant deletes while the provider call is in flight.
    from prism_backends.cvms import repository

    with unit_of_work(rt.sessions) as session:
        assert repository.mark_deleted(session, "dom-1", cvm_id, utcnow())
    workers._converge(work)
    row = cvm_row(rt.sessions, cvm_id)
    assert row.state == "deleting"
    assert row.cvm_id == f"i-{cvm_id[:8]}"  # what was learnt is kept for the teardown
    _drain(rt)
    assert cvm_row(rt.sessions, cvm_id).state == "deleted"
    assert provider.ledger.live == {}


def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(
    rt: Runtime, provider: MemoryProvider
) -> None:
    cvm_id = pending_cvm(rt.sessions)
    crashed = LifecycleWorkers(rt.settings, rt.sessions, rt.catalog)
    with unit_of_work(rt.sessions) as session:
        (work,) = queue.claim(session, owner=crashed.owner, now=utcnow(), lease_seconds=30, limit=1)
        # Nobody else may take it while the lease runs.
        assert queue.claim(session, owner="other", now=utcnow(), lease_seconds=30, limit=1) == []
    later = utcnow() + timedelta(seconds=31)
    with unit_of_work(rt.sessions) as session:
        (taken,) = queue.claim(session, owner="successor", now=later, lease_seconds=30, limit=1)
    assert taken.id == cvm_id
    crashed._converge(work)  # the old owner wakes up: its result must be discarded
    row = cvm_row(rt.sessions, cvm_id)
    assert (row.lease_owner, row.state) == ("successor", "provisioning")
    assert provider.ledger.creations == {cvm_id: 1}


def test_retry_delay_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(7)
    delays = [retry_delay(n, base=1.0, cap=30.0, rng=rng) for n in range(1, 200)]
    assert all(0.1 <= delay <= 30.0 for delay in delays)
    assert max(retry_delay(1, base=1.0, cap=30.0, rng=rng) for _ in range(100)) <= 1.0
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not lockstep
    assert retry_delay(10_000, base=1.0, cap=30.0, rng=rng) <= 30.0


def test_sweep_removes_machines_no_live_cvm_owns(rt: Runtime, provider: MemoryProvider) -> None:
    from prism_backends.cvms import repository
    from prism_backends.lifecycle.sweeper import sweep
    from prism_backends.providers.base import Machine, MachineState

    kept = pending_cvm(rt.sessions)
    _drain(rt)
    deleted = pending_cvm(rt.sessions)
    _drain(rt)
    with unit_of_work(rt.sessions) as session:
        assert repository.mark_deleted(session, "dom-1", deleted, utcnow())
    _drain(rt)
    # A stale worker resurrects the deleted CVM's machine; another belongs to no CVM.
    provider.ledger.live[deleted] = Machine("i-stale", MachineState.RUNNING)
    provider.ledger.live["no-such-cvm"] = Machine("i-stray", MachineState.RUNNING)
    report = sweep(rt.catalog, rt.sessions)
    assert (report.examined, report.removed, report.failed) == (3, 2, 0)
    assert set(provider.ledger.live) == {kept}
    assert sweep(rt.catalog, rt.sessions).removed == 0
