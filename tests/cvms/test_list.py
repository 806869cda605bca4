"""GET /{domainID}/cvms: paging, every filter, order, totals, deleted CVMs."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from prism_backends.cvms.models import CVM
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import Status
from tests.conftest import TokenFactory, auth
from tests.factories import insert_cvm


def _list(client: TestClient, token: TokenFactory, query: str = "") -> dict[str, object]:
    reply = client.get(f"/backends/dom-1/cvms{query}", headers=auth(token()))
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


def _names(page: dict[str, object]) -> list[str]:
    cvms = page["cvms"]
    assert isinstance(cvms, list)
    return [cvm["name"] for cvm in cvms]


def test_defaults_newest_first_and_total_counts_every_match(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    now = utcnow()
    for index in range(12):
        insert_cvm(runtime.sessions, name=f"n{index:02d}", created_at=now - timedelta(hours=index))
    page = _list(client, token)
    assert (page["total"], page["limit"], page["offset"]) == (12, 10, 0)
    assert _names(page) == [f"n{index:02d}" for index in range(10)]
    second = _list(client, token, "?limit=5&offset=10")
    assert _names(second) == ["n10", "n11"]
    assert (second["total"], second["limit"], second["offset"]) == (12, 5, 10)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?offset=-1", "offset"),
        ("?status=sleeping", "status"),
        ("?cc_platform=sgx", "cc_platform"),
        ("?days=0", "days"),
        ("?days=-3", "days"),
        ("?days=x", "days"),
        ("?limit=--1", "limit"),
        ("?offset=" + "9" * 40, "offset"),
        ("?name=%00", "name"),
        ("?include=evidence", "include"),
    ],
)
def test_out_of_range_query_is_400_naming_it(
    client: TestClient, token: TokenFactory, query: str, field: str
) -> None:
    reply = client.get(f"/backends/dom-1/cvms{query}", headers=auth(token()))
    assert reply.status_code == 400
    assert reply.json()["message"].startswith(f"{field}:")


def test_limit_100_is_accepted(client: TestClient, token: TokenFactory) -> None:
    assert _list(client, token, "?limit=100")["limit"] == 100


def test_name_is_a_case_insensitive_substring(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    for name in ("Alpha-One", "beta", "ALPHABET", "100%_sure"):
        insert_cvm(runtime.sessions, name=name)
    assert sorted(_names(_list(client, token, "?name=alpha"))) == ["ALPHABET", "Alpha-One"]
    assert _names(_list(client, token, "?name=%25_")) == ["100%_sure"]
    assert _list(client, token, "?name=_")["total"] == 1  # wildcards are literal


def test_status_filter(client: TestClient, runtime: Runtime, token: TokenFactory) -> None:
    insert_cvm(runtime.sessions, name="up", status=Status.RUNNING)
    insert_cvm(runtime.sessions, name="down", status=Status.OFFLINE)
    assert _names(_list(client, token, "?status=offline")) == ["down"]
    assert _names(_list(client, token, "?status=RUNNING")) == ["up"]


def test_platform_filter_is_normalised(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    insert_cvm(runtime.sessions, name="amd", platform="sev-snp")
    insert_cvm(runtime.sessions, name="intel", platform="tdx")
    assert _names(_list(client, token, "?cc_platform=Intel%20TDX")) == ["intel"]
    assert _names(_list(client, token, "?cc_platform=SEV_SNP")) == ["amd"]


def test_days_keeps_recent_cvms(client: TestClient, runtime: Runtime, token: TokenFactory) -> None:
    now = utcnow()
    insert_cvm(runtime.sessions, name="new", created_at=now - timedelta(hours=20))
    insert_cvm(runtime.sessions, name="old", created_at=now - timedelta(days=3))
    assert _names(_list(client, token, "?days=1")) == ["new"]
    assert sorted(_names(_list(client, token, "?days=7"))) == ["new", "old"]


def test_deleted_cvms_only_with_status_inactive(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    insert_cvm(runtime.sessions, name="live")
    insert_cvm(runtime.sessions, name="gone", deleted=True)
    page = _list(client, token)
    assert (_names(page), page["total"]) == (["live"], 1)
    inactive = _list(client, token, "?status=inactive")
    assert _names(inactive) == ["gone"]
    cvms = inactive["cvms"]
    assert isinstance(cvms, list)
    assert cvms[0]["deleted_at"] != "0001-01-01T00:00:00Z"


def test_filters_combine(client: TestClient, runtime: Runtime, token: TokenFactory) -> None:
    insert_cvm(runtime.sessions, name="web-amd", platform="sev-snp", status=Status.RUNNING)
    insert_cvm(runtime.sessions, name="web-intel", platform="tdx", status=Status.RUNNING)
    insert_cvm(runtime.sessions, name="db-intel", platform="tdx", status=Status.RUNNING)
    page = _list(client, token, "?name=web&cc_platform=tdx&status=running&days=1")
    assert (_names(page), page["total"]) == (["web-intel"], 1)


@pytest.mark.parametrize("name", ["x" * 20_000, "%" * 20_000, "x" * 256])
def test_a_name_filter_longer_than_any_name_is_400(
    client: TestClient, token: TokenFactory, name: str
) -> None:
    reply = client.get("/backends/dom-1/cvms", params={"name": name}, headers=auth(token()))
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("name:")


def test_wildcards_in_a_name_filter_match_themselves(
    client: TestClient, token: TokenFactory
) -> None:
    reply = client.get("/backends/dom-1/cvms", params={"name": "%" * 255}, headers=auth(token()))
    assert reply.status_code == 200
    assert reply.json()["total"] == 0


def test_lists_leave_evidence_out_unless_asked_and_view_carries_it(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    cvm_id = insert_cvm(runtime.sessions, name="attested")
    evidence = b"\x02" * 5000
    with unit_of_work(runtime.sessions) as session:
        session.execute(update(CVM).where(CVM.id == cvm_id).values(attestation=evidence))
    encoded = base64.b64encode(evidence).decode()

    listed = _list(client, token)["cvms"]
    assert isinstance(listed, list)
    assert listed[0]["attestation"] == ""  # the field stays, empty
    asked = _list(client, token, "?include=attestation")["cvms"]
    assert isinstance(asked, list)
    assert asked[0]["attestation"] == encoded
    assert _list(client, token, "?include=ATTESTATION,")["cvms"] == asked
    viewed = client.get(f"/backends/dom-1/cvms/{cvm_id}", headers=auth(token())).json()
    assert viewed["attestation"] == encoded
