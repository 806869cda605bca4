"""Lifecycle workers: threads that claim CVMs and converge them one at a time.

Any number of worker processes may run against one PostgreSQL database; they
coordinate only through the leases on the rows.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository as agents_repository
from prism_backends.config import Settings
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.errors import StoreUnavailable
from prism_backends.lifecycle import queue, reconciler, sweeper
from prism_backends.lifecycle.backoff import retry_delay
from prism_backends.observability import context
from prism_backends.providers.base import AgentBootstrap
from prism_backends.providers.registry import Catalog
from prism_backends.vocabulary import State

# (session, domain id, CVM id) -> what that CVM's agent needs to dial in.
AgentBootstrapFor = Callable[[Session, str, str], AgentBootstrap | None]

log = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LifecycleWorkers:
    """``concurrency`` threads, each claiming and converging one CVM at a time."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        catalog: Catalog,
        bootstrap: AgentBootstrapFor | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._catalog = catalog
        self._bootstrap = bootstrap
        self._owner = worker_identity()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        # CVMs whose step the store cut short while we held their lease: released
        # at the next claim, so they do not wait for the lease to run out.
        self._stranded: set[str] = set()
        self._stranded_lock = threading.Lock()
        self._policy = reconciler.RetryPolicy(
            timedelta(seconds=settings.retry_give_up_seconds),
            create_timeout=timedelta(seconds=settings.create_timeout_seconds),
        )

    @property
    def owner(self) -> str:
        return self._owner

    def start(self) -> None:
        for index in range(self._settings.worker_concurrency):
            thread = threading.Thread(target=self._run, name=f"lifecycle-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        sweeper = threading.Thread(target=self._sweep_loop, name="lifecycle-sweep", daemon=True)
        sweeper.start()
        self._threads.append(sweeper)
        log.info("lifecycle workers started: %s x%d", self._owner, len(self._threads) - 1)

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except StoreUnavailable:
                log.debug("store unavailable; lifecycle worker waits")  # said once by the store
                worked = False
            except Exception:
                # One bad CVM must never stop the loop.
                log.exception("lifecycle step failed")
                worked = False
            if not worked:
                self._wake.wait(self._settings.poll_seconds)
                self._wake.clear()

    def _sweep_loop(self) -> None:
        interval = self._settings.sweep_seconds
        # Spread the sweeps of many worker processes over the interval.
        while not self._stop.wait(self._rng.uniform(0.5, 1.0) * interval):
            try:
                report = sweeper.sweep(self._catalog, self._sessions)
            except StoreUnavailable:
                log.debug("store unavailable; the sweep waits")  # said once by the store
                continue
            except Exception:
                log.exception("sweep failed")
                continue
            if report.removed or report.failed:
                log.info("sweep: %s", report)

    def run_once(self) -> bool:
        """Claim one due CVM and converge it one step. False when none was due."""
        with self._stranded_lock:
            stranded, self._stranded = sorted(self._stranded), set()
        try:
            with unit_of_work(self._sessions) as session:
                if stranded:
                    queue.release(session, cvm_ids=stranded, owner=self._owner)
                claimed = queue.claim(
                    session,
                    owner=self._owner,
                    now=utcnow(),
                    lease_seconds=self._settings.lease_seconds,
                    limit=1,
                )
        except StoreUnavailable:
            self._strand(stranded)
            raise
        if not claimed:
            return False
        try:
            self._converge(claimed[0])
        except StoreUnavailable:
            self._strand([claimed[0].id])
            raise
        return True

    def _strand(self, cvm_ids: list[str]) -> None:
        with self._stranded_lock:
            self._stranded.update(cvm_ids)

    def _converge(self, work: queue.Work) -> None:
        with context.about_cvm(work.id):  # the CVM id on every log line of its work
            self._converge_cvm(work)

    def _converge_cvm(self, work: queue.Work) -> None:
        entry = self._catalog.get(work.provider)
        keeper = _LeaseKeeper(self._sessions, work.id, self._owner, self._settings.lease_seconds)
        agent = None
        if self._bootstrap is not None and work.state == State.PROVISIONING.value:
            with unit_of_work(self._sessions) as session:
                agent = self._bootstrap(session, work.domain_id, work.id)
        keeper.start()
        try:
            outcome = reconciler.step(work, entry.provider if entry else None, agent)
        finally:
            keeper.stop()
        now = utcnow()
        outcome = self._policy.timed_out(work, outcome, now)
        if outcome.kind is reconciler.Kind.RETRY and self._policy.gives_up(work, now):
            outcome = reconciler.give_up(outcome)
        delay = retry_delay(
            work.attempts + 1,
            base=self._settings.retry_base_seconds,
            cap=self._settings.retry_max_seconds,
            rng=self._rng,
        )
        # The provider's work is done: record it even if the store blinks
        # meanwhile, while the lease is surely still ours (renewed every third
        # of it until a moment ago), rather than leave the CVM leased and idle
        # until the lease runs out.
        recorded_by = time.monotonic() + 0.6 * self._settings.lease_seconds
        while True:
            try:
                if not self._record(work, outcome, now, delay):
                    return
                break
            except StoreUnavailable:
                if time.monotonic() > recorded_by or self._stop.is_set():
                    raise
                self._stop.wait(min(1.0, self._settings.poll_seconds))
        said = f"{outcome.kind}: {outcome.reason}" if outcome.reason else outcome.kind
        log.info("CVM %s (%s): %s", work.id, work.provider, said)

    def _record(
        self, work: queue.Work, outcome: reconciler.Outcome, now: datetime, delay: float
    ) -> bool:
        """Apply a step's outcome to the CVM; False if another worker owns it now."""
        with unit_of_work(self._sessions) as session:
            cvm = queue.lock_if_owned(session, cvm_id=work.id, owner=self._owner)
            if cvm is None:
                log.warning("lost the lease on CVM %s; its new owner carries on", work.id)
                return False
            reconciler.apply(cvm, work, outcome, now=now, retry_at=now + timedelta(seconds=delay))
            machine = outcome.machine
            if outcome.kind is reconciler.Kind.PROVISIONED and machine and machine.detail:
                agents_repository.add_events(
                    session, [_provider_event(work.id, machine.detail, now)]
                )
        return True


def _provider_event(cvm_id: str, detail: str, now: datetime) -> dict[str, object]:
    return {
        "cvm_id": cvm_id,
        "kind": "provider",
        "occurred_at": now,
        "received_at": now,
        "level": "warn",
        "message": detail,
        "computation_id": "",
        "details": "",
    }


class _LeaseKeeper:
    """Renews a lease while a long provider call is in flight."""

    def __init__(
        self, sessions: sessionmaker[Session], cvm_id: str, owner: str, lease_seconds: float
    ) -> None:
        self._sessions = sessions
        self._cvm_id = cvm_id
        self._owner = owner
        self._lease = lease_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{cvm_id[:8]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._lease / 3):
            try:
                with unit_of_work(self._sessions) as session:
                    held = queue.renew(
                        session,
                        cvm_id=self._cvm_id,
                        owner=self._owner,
                        until=utcnow() + timedelta(seconds=self._lease),
                    )
            except Exception:
                log.warning("could not renew the lease on CVM %s", self._cvm_id, exc_info=True)
                continue
            if not held:
                return
