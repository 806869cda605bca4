"""View, delete and the CVM object's shape."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from prism_backends.lifecycle.worker import LifecycleWorkers
from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth
from tests.cvms.conftest import CreateFn
from tests.fakes.memory_provider import MemoryProvider

FIELDS = {
    "id",
    "name",
    "cvm_id",
    "agent_url",
    "status",
    "state",
    "created_at",
    "deleted_at",
    "provider",
    "vcpus",
    "attestation",
    "attestation_token",
    "agent_log_level",
    "monthly_cost_estimate",
    "cc_platform",
}
# Whole seconds, as the source document shows them, on every route.
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _workers(runtime: Runtime) -> LifecycleWorkers:
    return LifecycleWorkers(runtime.settings, runtime.sessions, runtime.catalog)


def _drain(runtime: Runtime) -> None:
    workers = _workers(runtime)
    for _ in range(20):
        if not workers.run_once():
            return
    raise AssertionError("work did not run out")


def test_object_has_the_source_documents_fields_and_types(create: CreateFn) -> None:
    cvm = create().json()
    assert set(cvm) >= FIELDS
    assert isinstance(cvm["vcpus"], int)
    for field in FIELDS - {"vcpus"}:
        assert isinstance(cvm[field], str), field  # unknown strings are "", never null
    assert RFC3339_UTC.match(cvm["created_at"]) and RFC3339_UTC.match(cvm["updated_at"])
    assert cvm["deleted_at"] == "0001-01-01T00:00:00Z"
    assert (cvm["attestation"], cvm["attestation_token"]) == ("", "")
    assert cvm["monthly_cost_estimate"] == "$0.00"


def test_cost_estimate_comes_from_the_price_table(aws: MemoryProvider, create: CreateFn) -> None:
    # aws sev-snp 2 vCPU: 0.09504 $/h x 730 h = $69.38
    assert create(provider="aws", vcpu="2").json()["monthly_cost_estimate"] == "$69.38"
    assert create("big", provider="aws", vcpu="8").json()["monthly_cost_estimate"] == "$277.52"


def test_view_unknown_is_404(client: TestClient, token: TokenFactory) -> None:
    reply = client.get("/backends/dom-1/cvms/nope", headers=auth(token()))
    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"


def test_delete_is_204_then_404_and_teardown_runs_in_the_background(
    client: TestClient, runtime: Runtime, aws: MemoryProvider, create: CreateFn, token: TokenFactory
) -> None:
    headers = auth(token())
    cvm_id = create(provider="aws").json()["id"]
    _drain(runtime)
    assert cvm_id in aws.ledger.live
    reply = client.delete(f"/backends/dom-1/cvms/{cvm_id}", headers=headers)
    assert (reply.status_code, reply.content) == (204, b"")
    assert client.get(f"/backends/dom-1/cvms/{cvm_id}", headers=headers).status_code == 404
    assert client.delete(f"/backends/dom-1/cvms/{cvm_id}", headers=headers).status_code == 404

    deleting = client.get("/backends/dom-1/cvms?status=inactive", headers=headers).json()["cvms"]
    assert [(c["id"], c["state"], c["status"]) for c in deleting] == [
        (cvm_id, "deleting", "inactive")
    ]
    assert deleting[0]["deleted_at"] != "0001-01-01T00:00:00Z"

    _drain(runtime)
    deleted = client.get("/backends/dom-1/cvms?status=inactive", headers=headers).json()["cvms"]
    assert (deleted[0]["state"], deleted[0]["status"]) == ("deleted", "inactive")
    assert cvm_id not in aws.ledger.live


def test_delete_unknown_is_404(client: TestClient, token: TokenFactory) -> None:
    assert client.delete("/backends/dom-1/cvms/nope", headers=auth(token())).status_code == 404
