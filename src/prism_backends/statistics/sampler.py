"""The uptime sampler, and the reaper that keeps ``status`` truthful.

Every process that runs it (``serve``, ``worker``, ``agents``) may; the first
to claim a sampling instant samples it, so instants are never counted twice.
The reaper marks offline the CVMs whose agent stopped answering, or whose
session's replica stopped renewing it (it crashed), and folds the CVM tallies.
Hourly housekeeping prunes old samples and events, and warns (an event) about
agent certificates that run out soon.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository as agents_repository
from prism_backends.agents.limits import EventBounds
from prism_backends.config import Settings
from prism_backends.cvms import tally
from prism_backends.cvms.schemas import rfc3339
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.errors import StoreUnavailable
from prism_backends.statistics import repository
from prism_backends.statistics.bitmap import slot_start
from prism_backends.vocabulary import LogLevel

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(hours=1)


class Sampler:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._interval = max(1, int(settings.stats_interval_seconds))
        self._owner = f"sampler:{os.getpid()}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._last_prune: datetime | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        reap_every = min(self._settings.heartbeat_seconds, self._interval)
        while not self._stop.is_set():
            now = utcnow()
            next_slot = slot_start(now, self._interval) + timedelta(seconds=self._interval)
            wait = min(reap_every, (next_slot - now).total_seconds())
            if self._stop.wait(max(wait, 0.05)):
                return
            try:
                self.run_once(utcnow())
            except StoreUnavailable:
                log.debug("store unavailable; the sampler waits")  # said once by the store
            except Exception:
                log.exception("sampler step failed")

    def run_once(self, now: datetime) -> bool:
        """Reap, then sample the current instant unless another process did.
        True when this call took the sample."""
        silent_since = now - timedelta(seconds=self._settings.offline_after_seconds)
        slot = slot_start(now, self._interval)
        with unit_of_work(self._sessions) as session:
            agents_repository.expire_sessions(session, now, silent_since)
            tally.fold(session)
            sampled = repository.claim_slot(session, slot, self._owner, now)
            if sampled:
                repository.sample_every_live_cvm(session, slot, self._interval)
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            self._prune(now)
        return sampled

    def _prune(self, now: datetime) -> None:
        settings = self._settings
        keep_from = now - timedelta(days=settings.stats_retention_days)
        with unit_of_work(self._sessions) as session:
            repository.prune(session, before_day=keep_from.date(), slots_before=keep_from)
            agents_repository.prune_events(
                session,
                received_before=now - timedelta(days=settings.events_retention_days),
                bounds=EventBounds(settings.events_per_cvm, settings.events_bytes_per_cvm),
            )
        self.warn_expiring_certificates(now)
        self._last_prune = now

    def warn_expiring_certificates(self, now: datetime) -> int:
        """One warning event per CVM whose newest valid certificate expires within
        ``certificate_warn_days``; each certificate is warned about once, by
        whichever process claims it. The number of warnings written."""
        days = self._settings.certificate_warn_days
        if days == 0:
            return 0
        with unit_of_work(self._sessions) as session:
            expiring = agents_repository.claim_expiry_warnings(
                session, now, now + timedelta(days=days)
            )
            agents_repository.add_events(session, [_expiry_event(e, now) for e in expiring])
        return len(expiring)


def _expiry_event(expiring: agents_repository.Expiring, now: datetime) -> dict[str, object]:
    not_after = rfc3339(expiring.not_after)
    message = (
        f"the agent's certificate {expiring.serial} expires at {not_after}: renew it "
        f"(POST .../certificates/{expiring.serial}/renew) and give the agent the new "
        "agent_config"
    )
    details = json.dumps({"serial": expiring.serial, "not_after": not_after})
    return {
        "cvm_id": expiring.cvm_id,
        "kind": "certificate",
        "occurred_at": now,
        "received_at": now,
        "level": LogLevel.WARN.value,
        "message": message,
        "computation_id": "",
        "details": details,
        "size": len(message.encode()) + len(details.encode()),
    }
