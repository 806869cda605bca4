"""The routes render CVMs with ``cvm_document`` rather than through ``CVMOut``:
what they send must be exactly what the model (and so the OpenAPI document)
describes, from a full row and from the columns the reads select."""

from __future__ import annotations

from sqlalchemy import select

from prism_backends.cvms import repository
from prism_backends.cvms.models import CVM
from prism_backends.cvms.schemas import CVMOut, ShownCVM, cvm_document
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from tests.factories import insert_cvm


def test_the_document_is_the_model_field_for_field_from_a_row_and_from_shown_columns(
    runtime: Runtime,
) -> None:
    cvm_id = insert_cvm(runtime.sessions, domain_id="dom-1")
    with unit_of_work(runtime.sessions) as session:
        row = session.scalars(select(CVM).where(CVM.id == cvm_id)).one()
        row.attestation = b"\x01\x02evidence"
        session.flush()
        shown = repository.shown_live(session.connection(), "dom-1", cvm_id)
        assert shown is not None
        from_row = cvm_document(ShownCVM.of(row), row.attestation)
        from_shown = cvm_document(shown, shown.attestation)
    assert from_row == from_shown
    assert list(from_row) == list(CVMOut.model_fields)
    assert CVMOut.model_validate(from_row).model_dump() == from_row
    assert from_row["attestation"] == "AQJldmlkZW5jZQ=="
    assert cvm_document(ShownCVM.of(row), None)["attestation"] == ""


def test_every_shown_column_is_read_by_the_document() -> None:
    """A column the reads select but the document ignores is wasted work; one
    it reads but they do not select fails at the first view."""
    read = set(CVMOut.model_fields) - {"attestation", "monthly_cost_estimate"}
    assert set(repository.SHOWN_COLUMNS) == read | {"monthly_cost_cents"}
