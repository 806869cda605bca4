"""Gauges read from the store at scrape time: what is true of the whole
deployment, whichever process changed it (CVMs by provider, state and
status; agents connected per replica; the lifecycle queue; the sampler).

One short transaction per scrape, a handful of grouped counts over indexed
columns. The agents replicas of the scraped process are shown with 0 agents
too, so that "none connected here" is a series, not a missing one. When the
store cannot be reached the gauges are left out and ``backends_store_up`` says
0: a scrape never fails for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository as agent_repository
from prism_backends.cvms import repository as cvm_repository
from prism_backends.db.base import utcnow
from prism_backends.lifecycle import queue
from prism_backends.statistics import repository as statistics_repository

log = logging.getLogger(__name__)


class StoreGauges(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        local_replicas: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """``local_replicas``: the agents replicas this process runs, at scrape time."""
        self._sessions = sessions
        self._local_replicas = local_replicas

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("backends_store_up", "1 when the store answered this scrape.")
        try:
            with self._sessions() as session:
                families = list(_families(session, utcnow(), set(self._local_replicas())))
        except SQLAlchemyError as exc:
            log.warning("metrics: the store did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _families(session: Session, now: datetime, local_replicas: set[str]) -> Iterator[Metric]:
    cvms = GaugeMetricFamily(
        "backends_cvms", "CVMs not yet deleted, by provider, state and status.",
        labels=["provider", "state", "status"],
    )  # fmt: skip
    for provider, state, status, count in cvm_repository.deployment_counts(session):
        cvms.add_metric([provider, state, status], count)
    yield cvms

    agents = GaugeMetricFamily(
        "backends_agents_connected", "Agents with an open stream, by agents replica.",
        labels=["replica"],
    )  # fmt: skip
    counts = dict.fromkeys(local_replicas, 0)
    counts.update(agent_repository.open_sessions_by_replica(session, now))
    for replica, count in sorted(counts.items()):
        agents.add_metric([replica], count)
    yield agents

    depth, oldest = queue.due(session, now)
    yield GaugeMetricFamily(
        "backends_lifecycle_queue_depth", "CVMs whose lifecycle work is due now.", value=depth
    )
    yield GaugeMetricFamily(
        "backends_lifecycle_queue_oldest_due_seconds",
        "How long the oldest due lifecycle item has waited (0 when none is due).",
        value=(now - oldest).total_seconds() if oldest is not None else 0.0,
    )

    newest = statistics_repository.newest_slot(session)
    if newest is not None:
        slot_at, sampled_at = newest
        yield GaugeMetricFamily(
            "backends_sampler_lag_seconds",
            "How late the newest uptime sample was taken after its instant.",
            value=(sampled_at - slot_at).total_seconds(),
        )
        yield GaugeMetricFamily(
            "backends_sampler_last_sample_age_seconds",
            "Time since the instant of the newest uptime sample (grows when no sampler runs).",
            value=(now - slot_at).total_seconds(),
        )
