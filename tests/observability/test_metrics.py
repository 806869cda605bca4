"""``/metrics`` after a scripted workload: each metric moves as the workload says,
on SQLite and on PostgreSQL; ``/ready`` sees the store."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from prism_backends.agents.models import AgentSession
from prism_backends.agents.runner import AgentsThread
from prism_backends.config import Settings
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.http.app import create_app
from prism_backends.lifecycle.sweeper import sweep
from prism_backends.lifecycle.worker import LifecycleWorkers
from prism_backends.observability.evidence import reason_kind
from prism_backends.observability.instruments import instruments
from prism_backends.observability.latency import quantile_of
from prism_backends.providers.base import Machine, MachineState, RetryableProviderError
from prism_backends.providers.config import default_configs
from prism_backends.providers.registry import Catalog, CatalogEntry
from prism_backends.runtime import Runtime
from prism_backends.statistics.models import SampledSlot
from tests.conftest import TokenFactory, auth
from tests.factories import pending_cvm
from tests.fakes.memory_provider import MemoryProvider
from tests.observability.scrape import Samples, labelled, moved, parse, value
from tests.served import free_port

DOMAIN = "dom-1"


def _scrape(client: TestClient, path: str = "/metrics") -> Samples:
    reply = client.get(path)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def test_requests_are_counted_by_route_and_status_with_latency(
    client: TestClient, token: TokenFactory
) -> None:
    headers = auth(token(DOMAIN))
    before = _scrape(client)
    created = client.post(
        f"/backends/{DOMAIN}/cvms/external/2/sev-snp", json={"name": "metered"}, headers=headers
    )
    assert created.status_code == 201, created.text
    for _ in range(3):
        assert client.get(f"/backends/{DOMAIN}/cvms", headers=headers).status_code == 200
    missing = client.get(
        f"/backends/{DOMAIN}/cvms/00000000-0000-0000-0000-000000000000", headers=headers
    )
    assert missing.status_code == 404
    assert client.get(f"/backends/{DOMAIN}/cvms").status_code == 401
    assert client.get("/backends/no/such/route").status_code == 404
    after = _scrape(client)

    count = "backends_api_request_count"
    assert moved(before, after, count, method="create_cvm", status="201") == 1
    assert moved(before, after, count, method="list_cvms", status="200") == 3
    assert moved(before, after, count, method="list_cvms", status="401") == 1
    assert moved(before, after, count, method="view_cvm", status="404") == 1
    # What no route matched is one series, whatever the path: labels stay bounded.
    assert moved(before, after, count, method="unmatched", status="404") == 1
    assert not any("/" in labels["method"] for labels in labelled(after, count))
    # The scrape before this one is counted too.
    assert moved(before, after, "http_requests_total", status_code="200") >= 4
    assert moved(before, after, "http_requests_total", status_code="404") == 2
    assert moved(before, after, "http_request_duration_seconds_count") >= 8
    assert moved(before, after, "http_request_duration_seconds_bucket", le="+Inf") >= 8

    latency = "backends_api_request_latency_microseconds"
    assert value(after, f"{latency}_count", method="list_cvms") >= 4
    quantiles = [
        value(after, latency, method="list_cvms", quantile=q) for q in ("0.5", "0.9", "0.99")
    ]
    assert 0 < quantiles[0] <= quantiles[1] <= quantiles[2] < 60e6


def test_prisms_counter_keeps_go_kits_name(client: TestClient) -> None:
    client.get("/backends/health")
    text = client.get("/metrics").text
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    # Prism's dashboards read backends_api_request_count, not ..._count_total.
    assert "backends_api_request_count_total" not in text
    assert families["backends_api_request_count"] == "unknown"
    assert families["http_requests"] == "counter"
    assert families["http_request_duration_seconds"] == "histogram"
    assert families["backends_api_request_latency_microseconds"] == "summary"
    assert _scrape(client, "/backends/metrics").keys() >= {("backends_store_up", frozenset())}


def test_store_gauges_count_cvms_agents_queue_and_sampler(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    headers = auth(token(DOMAIN))
    before = _scrape(client)
    assert value(before, "backends_store_up") == 1
    ids = [
        client.post(
            f"/backends/{DOMAIN}/cvms/external/2/sev-snp", json={"name": name}, headers=headers
        ).json()["id"]
        for name in ("kept", "deleted")
    ]
    client.delete(f"/backends/{DOMAIN}/cvms/{ids[1]}", headers=headers)
    pending_cvm(runtime.sessions)
    now = utcnow()
    with unit_of_work(runtime.sessions) as session:
        session.add(
            AgentSession(
                cvm_id=ids[0],
                replica="replica-a",
                connected_at=now,
                expires_at=now + timedelta(minutes=1),
            )
        )
        session.add(
            SampledSlot(
                slot_at=now - timedelta(seconds=30),
                sampled_by="sampler-1",
                sampled_at=now - timedelta(seconds=28),
            )
        )
    after = _scrape(client)

    starting = {"provider": "external", "state": "provisioned", "status": "starting"}
    assert value(after, "backends_cvms", **starting) == 1
    assert value(after, "backends_cvms", provider="aws", state="pending", status="starting") == 1
    # Deleted CVMs are no longer counted; one being deleted is, until it is gone.
    # Being deleted until a worker finishes; counted until then, not after.
    deleting = {"provider": "external", "state": "deleting", "status": "inactive"}
    assert value(after, "backends_cvms", **deleting) == 1
    assert len(labelled(after, "backends_cvms")) == 3
    assert value(after, "backends_agents_connected", replica="replica-a") == 1
    assert value(after, "backends_lifecycle_queue_depth") >= 1
    assert value(after, "backends_lifecycle_queue_oldest_due_seconds") >= 0
    assert value(after, "backends_sampler_lag_seconds") == pytest.approx(2.0)
    assert value(after, "backends_sampler_last_sample_age_seconds") >= 30


def test_an_agents_replica_with_no_agent_connected_shows_0(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime(make_settings(agents_host="127.0.0.1", agents_port=free_port()))
    agents = AgentsThread(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            assert labelled(_scrape(client), "backends_agents_connected") == []  # none here
            agents.start()
            here = agents.endpoint.hub.replica
            scraped = _scrape(client)
            assert labelled(scraped, "backends_agents_connected") == [{"replica": here}]
            assert value(scraped, "backends_agents_connected", replica=here) == 0
            agents.stop()
            assert labelled(_scrape(client), "backends_agents_connected") == []
    finally:
        agents.stop()
        runtime.close()


def test_evidence_is_counted_by_outcome_and_kind_of_reason(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    headers = auth(token(DOMAIN))
    cvm = client.post(
        f"/backends/{DOMAIN}/cvms/external/2/sev-snp", json={"name": "metered"}, headers=headers
    ).json()
    before = _scrape(client)
    verdict = runtime.appraiser.evidence(cvm["id"], b"\x00" * 16)
    assert verdict is not None and not verdict.verified
    after = _scrape(client)
    refused = [
        labels
        for labels in labelled(after, "backends_evidence_total")
        if labels["outcome"] == "refused"
        and moved(before, after, "backends_evidence_total", **labels) == 1
    ]
    assert refused == [
        {
            "platform": verdict.platform or "unknown",
            "outcome": "refused",
            "reason": reason_kind(verdict.reason),
        }
    ]
    assert refused[0]["reason"] != "other", verdict.reason


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("measurement 1a2b is not the expected value", "policy"),
        ("report_data does not bind the agent's certificate", "binding"),
        ("the VCEK certificate is revoked", "revoked"),
        ("the report's signature does not verify", "signature"),
        ("the PCK chain does not lead to Intel's root", "chain"),
        ("evidence too short for a report", "malformed"),
        ("something new", "other"),
    ],
)
def test_refusals_are_labelled_by_a_bounded_kind(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_provider_calls_and_sweep_removals_are_counted(
    make_settings: Callable[..., Settings], client: TestClient
) -> None:
    provider = MemoryProvider("aws")
    runtime = Runtime(make_settings(retry_base_seconds=0.001, retry_max_seconds=0.002))
    try:
        runtime.catalog = Catalog({"aws": CatalogEntry(default_configs()["aws"], provider)}, {})
        provider.create_failures = [RetryableProviderError("ZonalAllocationFailed")]
        before = _scrape(client)
        pending_cvm(runtime.sessions)
        workers = LifecycleWorkers(runtime.settings, runtime.sessions, runtime.catalog)
        for _ in range(50):
            if provider.ledger.live:
                break
            workers.run_once()
        provider.ledger.live["no-such-cvm"] = Machine("i-stray", MachineState.RUNNING)
        assert sweep(runtime.catalog, runtime.sessions).removed == 1
        after = _scrape(client)
    finally:
        runtime.close()

    calls = "backends_provider_calls_total"
    assert moved(before, after, calls, provider="aws", operation="create", outcome="retryable") == 1
    assert moved(before, after, calls, provider="aws", operation="create", outcome="ok") == 1
    assert moved(before, after, calls, provider="aws", operation="list_owned", outcome="ok") == 1
    assert moved(before, after, calls, provider="aws", operation="delete", outcome="ok") == 1
    duration = "backends_provider_call_duration_seconds_count"
    assert moved(before, after, duration, provider="aws", operation="create") == 2
    assert moved(before, after, "backends_leak_sweep_removed_total", provider="aws") == 1


def test_ready_answers_when_the_store_does_and_503_when_it_does_not(
    client: TestClient, tmp_path: Path
) -> None:
    assert client.get("/backends/ready").json() == {"status": "ready"}
    gone = tmp_path / "gone"
    gone.mkdir()
    broken = Runtime(
        Settings(data_dir=gone, database_url=f"sqlite:///{tmp_path}/no/such/dir/store.db")
    )
    try:
        with TestClient(create_app(broken), raise_server_exceptions=False) as unready:
            reply = unready.get("/backends/ready")
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"] == "store_unavailable"
            scraped = _scrape(unready)
            assert value(scraped, "backends_store_up") == 0
            assert labelled(scraped, "backends_cvms") == []
    finally:
        broken.close()


def test_metrics_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    runtime = Runtime(make_settings(metrics_enabled=False))
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as quiet:
            assert quiet.get("/metrics").status_code == 404
            assert quiet.get("/backends/ready").status_code == 200
    finally:
        runtime.close()


def test_quantiles_are_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]
    assert [quantile_of(ordered, q) for q in (0.5, 0.9, 0.99)] == [50.0, 90.0, 99.0]
    assert quantile_of([7.0], 0.99) == 7.0
    assert quantile_of([], 0.5) != quantile_of([], 0.5)  # NaN, as go-kit reports none


def test_the_grafana_dashboard_reads_only_metrics_the_service_exports(
    client: TestClient, runtime: Runtime
) -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:backends|http)_[a-z_]+\b", target["expr"])
    }
    now = utcnow()
    with unit_of_work(runtime.sessions) as session:
        session.add(SampledSlot(slot_at=now, sampled_by="s", sampled_at=now))
    client.get("/backends/health")
    exported = {name for name, _ in _scrape(client)}
    # Labelled series appear on first use: their families are known without it.
    made = instruments()
    for family in (getattr(made, field.name) for field in dataclasses.fields(made)):
        for metric in family.describe():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
            exported.update(metric.name + s for s in suffixes.get(metric.type, ("",)))
    # No rows (and, for agents, no agents endpoint in this process): no series.
    exported.update({"backends_cvms", "backends_agents_connected"})
    assert queried and queried <= exported, queried - exported
