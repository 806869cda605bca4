"""The CVM tally (``cvm_tallies``, kept by the store's triggers) always agrees
with counting the rows, whatever writes and folds happen, on both stores."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.cvms import repository, tally
from prism_backends.cvms.models import CVM, CVMTally
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import Platform, Status
from tests.factories import insert_cvm

DOMAINS = ("dom-a", "dom-b", "dom-c")
FILTERS = [
    repository.ListFilters(status=status, cc_platform=platform)
    for status in (None, *Status)
    for platform in (None, *Platform)
]


def counted(session: Session, domain_id: str, filters: repository.ListFilters) -> int:
    """The rows, counted: a list's definition of its matches."""
    query = select(func.count()).select_from(CVM).where(CVM.domain_id == domain_id)
    if filters.status is Status.INACTIVE:
        query = query.where(CVM.deleted_at.is_not(None))
    else:
        query = query.where(CVM.deleted_at.is_(None))
        if filters.status is not None:
            query = query.where(CVM.status == filters.status.value)
    if filters.cc_platform is not None:
        query = query.where(CVM.cc_platform == filters.cc_platform.value)
    return int(session.scalar(query) or 0)


def assert_tally_agrees(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions, read_only=True) as session:
        for domain_id in DOMAINS:
            for filters in FILTERS:
                expected = counted(session, domain_id, filters)
                got = tally.count(
                    session.connection(),
                    domain_id,
                    status=filters.status,
                    cc_platform=filters.cc_platform,
                )
                assert got == expected, (domain_id, filters)


def random_step(rng: random.Random, sessions: sessionmaker[Session]) -> None:
    """One write of the kinds the service makes: an insert, a bulk status
    change, a soft delete, a purge, a platform change, or a fold."""
    kind = rng.choice(["insert", "insert", "bulk_status", "soft_delete", "purge", "fold"])
    domain_id = rng.choice(DOMAINS)
    if kind == "insert":
        insert_cvm(
            sessions,
            domain_id=domain_id,
            status=rng.choice([s for s in Status if s is not Status.INACTIVE]),
            platform=rng.choice(list(Platform)).value,
            deleted=rng.random() < 0.1,
        )
        return
    with unit_of_work(sessions) as session:
        ids = list(session.scalars(select(CVM.id).where(CVM.domain_id == domain_id)))
        chosen = rng.sample(ids, min(len(ids), rng.randint(1, 6))) if ids else []
        if kind == "bulk_status":
            session.execute(
                update(CVM)
                .where(CVM.id.in_(chosen), CVM.deleted_at.is_(None))
                .values(status=rng.choice([Status.RUNNING, Status.OFFLINE]).value)
            )
        elif kind == "soft_delete" and chosen:
            repository.mark_deleted(session, domain_id, chosen[0], utcnow())
        elif kind == "purge":
            session.execute(delete(CVM).where(CVM.id.in_(chosen)))
        elif kind == "fold":
            tally.fold(session, most=rng.choice([0, 4, 64]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_tally_agrees_with_counting_after_any_writes(runtime: Runtime, seed: int) -> None:
    rng = random.Random(seed)
    for step in range(150):
        random_step(rng, runtime.sessions)
        if step % 25 == 24:
            assert_tally_agrees(runtime.sessions)
    assert_tally_agrees(runtime.sessions)


def test_a_fold_leaves_one_row_per_group_and_drops_empty_ones(runtime: Runtime) -> None:
    for _ in range(30):
        insert_cvm(runtime.sessions, domain_id="dom-a", status=Status.RUNNING)
    with unit_of_work(runtime.sessions) as session:
        session.execute(update(CVM).values(status=Status.OFFLINE.value))
        tally.fold(session, most=0)
    with unit_of_work(runtime.sessions, read_only=True) as session:
        rows = session.execute(select(CVMTally.status, CVMTally.change)).all()
    assert [(row.status, row.change) for row in rows] == [("offline", 30)]
    assert_tally_agrees(runtime.sessions)


def test_updates_that_move_no_cvm_between_groups_add_no_rows(runtime: Runtime) -> None:
    cvm_id = insert_cvm(runtime.sessions, domain_id="dom-a")
    with unit_of_work(runtime.sessions) as session:
        before = session.scalar(select(func.count()).select_from(CVMTally))
        session.execute(update(CVM).where(CVM.id == cvm_id).values(updated_at=utcnow()))
        session.execute(update(CVM).where(CVM.id == cvm_id).values(status=Status.RUNNING.value))
        after = session.scalar(select(func.count()).select_from(CVMTally))
    assert before == after == 1


def test_folds_beside_concurrent_writers_lose_nothing(runtime: Runtime) -> None:
    """Writers insert and move CVMs while folds run: the tally still agrees."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                random_step(rng, runtime.sessions)
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    def fold() -> None:
        while not stop.is_set():
            try:
                with unit_of_work(runtime.sessions) as session:
                    tally.fold(session, most=0)
            except BaseException as exc:
                failures.append(exc)
                return

    writers = [threading.Thread(target=write, args=(seed,)) for seed in (11, 12)]
    folder = threading.Thread(target=fold)
    folder.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    folder.join()
    assert failures == []
    assert_tally_agrees(runtime.sessions)
