"""The sampler: one sample per instant across processes, and the liveness reaper."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from prism_backends.agents import repository as agents_repository
from prism_backends.agents.models import AgentSession
from prism_backends.config import Settings
from prism_backends.cvms.models import CVM
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from prism_backends.statistics import repository as stats_repository
from prism_backends.statistics.bitmap import samples_of, slot_start
from prism_backends.statistics.models import UptimeDay
from prism_backends.statistics.sampler import Sampler
from prism_backends.vocabulary import State, Status
from tests.conftest import TokenFactory, auth
from tests.factories import insert_cvm


def test_each_instant_is_sampled_once_across_samplers(
    runtime: Runtime, make_settings: Callable[..., Settings]
) -> None:
    up = insert_cvm(runtime.sessions, status=Status.RUNNING)
    down = insert_cvm(runtime.sessions, status=Status.OFFLINE)
    insert_cvm(runtime.sessions, status=Status.STARTING, state=State.PROVISIONING)
    insert_cvm(runtime.sessions, deleted=True)
    settings = make_settings(stats_interval_seconds=300)
    now = utcnow()
    first, second = Sampler(settings, runtime.sessions), Sampler(settings, runtime.sessions)
    assert first.run_once(now) is True
    assert second.run_once(now + timedelta(seconds=1)) is False  # same instant
    with unit_of_work(runtime.sessions) as session:
        rows = {row.cvm_id: row for row in session.scalars(select(UptimeDay))}
    assert set(rows) == {up, down}  # provisioned, live CVMs only
    assert rows[up].up != rows[down].up


def test_statistics_show_what_was_sampled(
    runtime: Runtime,
    make_settings: Callable[..., Settings],
    client: TestClient,
    token: TokenFactory,
) -> None:
    cvm_id = insert_cvm(runtime.sessions, status=Status.RUNNING)
    sampler = Sampler(make_settings(stats_interval_seconds=60), runtime.sessions)
    start = slot_start(utcnow() - timedelta(minutes=10), 60)
    for minute in range(5):
        if minute == 3:
            with unit_of_work(runtime.sessions) as session:
                session.execute(update(CVM).values(status=Status.OFFLINE.value))
        assert sampler.run_once(start + timedelta(minutes=minute))
    reply = client.get(f"/backends/dom-1/cvms/{cvm_id}/statistics", headers=auth(token()))
    body = reply.json()
    assert [s["status"] for s in body["cvm_stats"]] == [False, False, True, True, True]
    assert body["uptime"] == 0.6


def test_reaper_marks_offline_what_no_replica_keeps_alive(runtime: Runtime) -> None:
    crashed = insert_cvm(runtime.sessions, status=Status.RUNNING)
    silent = insert_cvm(runtime.sessions, status=Status.RUNNING)
    healthy = insert_cvm(runtime.sessions, status=Status.RUNNING)
    now = utcnow()
    with unit_of_work(runtime.sessions) as session:
        # A replica that crashed stopped renewing; an agent stopped answering.
        agents_repository.open_session(
            session, crashed, "gone", now - timedelta(minutes=5), now - timedelta(minutes=1)
        )
        agents_repository.open_session(
            session, silent, "alive", now - timedelta(minutes=5), now + timedelta(minutes=1)
        )
        agents_repository.open_session(session, healthy, "alive", now, now + timedelta(minutes=1))
        agents_repository.mark_answered(session, "alive", [healthy], now)
    with unit_of_work(runtime.sessions) as session:
        reaped = agents_repository.expire_sessions(session, now, now - timedelta(seconds=30))
    assert sorted(reaped) == sorted([crashed, silent])
    with unit_of_work(runtime.sessions) as session:
        statuses = {row[0]: row[1] for row in session.execute(select(CVM.id, CVM.status))}
        remaining = set(session.scalars(select(AgentSession.cvm_id)))
    assert statuses == {crashed: "offline", silent: "offline", healthy: "running"}
    assert remaining == {silent, healthy}  # the silent agent's stream is still open


def _log_row(cvm_id: str, message: str, now: datetime) -> dict[str, object]:
    return {
        "cvm_id": cvm_id,
        "kind": "log",
        "occurred_at": now,
        "received_at": now,
        "level": "info",
        "message": message,
        "computation_id": "",
        "details": "",
        "size": len(message.encode()),
    }


def test_old_samples_and_events_are_pruned(
    runtime: Runtime, make_settings: Callable[..., Settings]
) -> None:
    cvm_id = insert_cvm(runtime.sessions, status=Status.RUNNING)
    settings = make_settings(stats_interval_seconds=300, stats_retention_days=2, events_per_cvm=10)
    now = utcnow()
    old = Sampler(settings, runtime.sessions)
    assert old.run_once(now - timedelta(days=5))
    with unit_of_work(runtime.sessions) as session:
        agents_repository.add_events(
            session, [_log_row(cvm_id, f"line {i}", now) for i in range(25)]
        )
    Sampler(settings, runtime.sessions).run_once(now)  # prunes on its first run
    with unit_of_work(runtime.sessions) as session:
        days = [row.day for row in session.scalars(select(UptimeDay))]
        page, total = agents_repository.events_page(session, "dom-1", cvm_id, limit=100, offset=0)
    assert days == [now.date()]
    # Past its bound of 10 the CVM drops its oldest quarter (and a bit): 8 remain.
    assert total == 8
    assert page[0].message == "line 24" and page[-1].message == "line 17"


def test_a_cvm_past_its_bytes_bound_keeps_its_newest_events(
    runtime: Runtime, make_settings: Callable[..., Settings]
) -> None:
    cvm_id = insert_cvm(runtime.sessions, status=Status.RUNNING)
    settings = make_settings(events_bytes_per_cvm=65536)
    now = utcnow()
    line = "x" * 10_000
    with unit_of_work(runtime.sessions) as session:
        agents_repository.add_events(
            session, [_log_row(cvm_id, f"{i:02d}{line}", now) for i in range(20)]
        )
    Sampler(settings, runtime.sessions).run_once(now)
    with unit_of_work(runtime.sessions) as session:
        page, total = agents_repository.events_page(session, "dom-1", cvm_id, limit=100, offset=0)
    # 200 kB against a bound of 64 KiB: the newest that fit in three quarters of it.
    assert total == 4
    assert [event.message[:2] for event in page] == ["19", "18", "17", "16"]


def test_one_statement_samples_every_provisioned_live_cvm(runtime: Runtime) -> None:
    up = insert_cvm(runtime.sessions, status=Status.RUNNING)
    down = insert_cvm(runtime.sessions, status=Status.OFFLINE)
    changes = insert_cvm(runtime.sessions, status=Status.RUNNING)
    pending = insert_cvm(runtime.sessions, state=State.PENDING, status=Status.STARTING)
    gone = insert_cvm(runtime.sessions, deleted=True)
    first = slot_start(utcnow(), 300)
    # Another slot of the same day: the second statement updates the rows the first made.
    step = timedelta(seconds=300)
    second = first + step if first + step < first.replace(hour=23, minute=55) else first - step
    with unit_of_work(runtime.sessions) as session:
        stats_repository.sample_every_live_cvm(session, first, 300)  # inserts the day rows
        session.execute(update(CVM).where(CVM.id == changes).values(status="offline"))
    with unit_of_work(runtime.sessions) as session:
        stats_repository.sample_every_live_cvm(session, second, 300)  # updates them
    with unit_of_work(runtime.sessions) as session:
        recorded = {
            cvm_id: {
                sample.timestamp: sample.up
                for row in stats_repository.days_since(session, "dom-1", cvm_id, first.date())
                for sample in samples_of(row.day, row.interval_seconds, row.seen, row.up)
            }
            for cvm_id in (up, down, changes, pending, gone)
        }
    assert recorded[up] == {first: True, second: True}
    assert recorded[down] == {first: False, second: False}
    assert recorded[changes] == {first: True, second: False}
    assert recorded[pending] == {} and recorded[gone] == {}
