"""The per-domain tally of CVMs (``cvm_tallies``): summed for a list's total,
folded from time to time so that each domain keeps a few rows.

The store's triggers (migration 0005) write the rows; nothing else does.
"""

from __future__ import annotations

import functools

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.orm import Session

from prism_backends.cvms.models import CVMTally
from prism_backends.db.driver import Prepared
from prism_backends.vocabulary import Platform, Status

# Every (status, platform, live) group a domain can have is about 14 rows;
# past this many rows a domain's changes are folded.
FOLD_PAST = 64


def count(
    connection: Connection, domain_id: str, *, status: Status | None, cc_platform: Platform | None
) -> int:
    """How many CVMs of the domain match: its live ones, or with
    ``status=inactive`` its deleted ones, optionally of one status and platform."""
    live = status is not Status.INACTIVE
    by_status = live and status is not None
    values: dict[str, object] = {"domain_id": domain_id, "live": live}
    if by_status and status is not None:
        values["status"] = status.value
    if cc_platform is not None:
        values["cc_platform"] = cc_platform.value
    statement = _count_statement(by_status, cc_platform is not None)
    return int(statement.scalar(connection, values) or 0)  # PostgreSQL sums a bigint as numeric


@functools.cache
def _count_statement(by_status: bool, by_platform: bool) -> Prepared:
    query = select(func.coalesce(func.sum(CVMTally.change), 0)).where(
        CVMTally.domain_id == bindparam("domain_id"), CVMTally.live == bindparam("live")
    )
    if by_status:
        query = query.where(CVMTally.status == bindparam("status"))
    if by_platform:
        query = query.where(CVMTally.cc_platform == bindparam("cc_platform"))
    return Prepared(query)


# One statement: rows a concurrent writer commits meanwhile are neither
# deleted nor summed, and a concurrent fold skips the rows this one deleted.
_FOLD_POSTGRES = """
WITH moved AS (
    DELETE FROM cvm_tallies
    WHERE domain_id IN (
        SELECT domain_id FROM cvm_tallies GROUP BY domain_id HAVING count(*) > :most
    )
    RETURNING domain_id, status, cc_platform, live, change
)
INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
SELECT domain_id, status, cc_platform, live, sum(change) FROM moved
GROUP BY domain_id, status, cc_platform, live HAVING sum(change) <> 0
"""

# SQLite has one writer (this transaction began IMMEDIATE): the rows up to
# the last id are summed, then deleted (the sums, inserted after it, stay).
_FOLD_SQLITE = (
    """
    INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
    SELECT domain_id, status, cc_platform, live, sum(change) FROM cvm_tallies
    WHERE id <= :last AND domain_id IN (
        SELECT domain_id FROM cvm_tallies GROUP BY domain_id HAVING count(*) > :most
    )
    GROUP BY domain_id, status, cc_platform, live HAVING sum(change) <> 0
    """,
    """
    DELETE FROM cvm_tallies
    WHERE id <= :last AND domain_id IN (
        SELECT domain_id FROM cvm_tallies GROUP BY domain_id HAVING count(*) > :most
    )
    """,
)


def fold(session: Session, *, most: int = FOLD_PAST) -> None:
    """System-scoped housekeeping: each domain with more than ``most`` rows
    gets one row per group (groups that sum to zero go)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(_FOLD_POSTGRES), {"most": most})
        return
    last = session.scalar(select(func.max(CVMTally.id)))
    if last is None:
        return
    for statement in _FOLD_SQLITE:
        session.execute(text(statement), {"most": most, "last": last})
