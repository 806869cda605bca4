"""``db.base.insert_values``: a Core insert fills in no ORM default, so an object
with a column left unset is refused, naming the column, rather than written with
NULL where the model has a default."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from prism_backends.agents.models import AgentCredential
from prism_backends.db.base import insert_values


def _credential(**unset: None) -> AgentCredential:
    given = {
        "cvm_id": "c",
        "serial": "1",
        "cert_pem": "pem",
        "sealed_key": b"k",
        "not_before": datetime(2026, 1, 1, tzinfo=UTC),
        "not_after": datetime(2027, 1, 1, tzinfo=UTC),
        "revoked_at": None,
        "presented_at": None,
        "expiry_warned_at": None,
    }
    for name in unset:
        del given[name]
    return AgentCredential(**given)


def test_every_column_but_the_generated_ones_is_given() -> None:
    values = insert_values(_credential(), generated=("id",))
    columns = {column.key for column in AgentCredential.__table__.columns}
    assert set(values) == columns - {"id"}
    assert values["presented_at"] is None


def test_a_column_left_unset_is_named() -> None:
    with pytest.raises(TypeError, match=r"AgentCredential\.presented_at was not given"):
        insert_values(_credential(presented_at=None), generated=("id",))
    with pytest.raises(TypeError, match=r"AgentCredential\.id was not given"):
        insert_values(_credential())
