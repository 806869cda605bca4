"""POST /{domainID}/cvms/{provider}/{vcpu}/{cc_platform}: every point of the contract."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.event import listen

from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth
from tests.cvms.conftest import CreateFn
from tests.fakes.memory_provider import MemoryProvider


def test_created_reply_has_location_and_the_cvm(
    client: TestClient, create: CreateFn, token: TokenFactory
) -> None:
    reply = create("example-cvm", body={"name": "example-cvm", "agent_log_level": "debug"})
    assert reply.status_code == 201
    cvm = reply.json()
    assert reply.headers["location"] == f"/backends/dom-1/cvms/{cvm['id']}"
    viewed = client.get(reply.headers["location"], headers=auth(token()))
    assert viewed.json() == cvm
    assert cvm["agent_log_level"] == "debug"
    assert cvm["provider"] == "external"
    assert cvm["cc_platform"] == "sev-snp"
    assert cvm["vcpus"] == 2


def test_provider_is_case_insensitive(create: CreateFn) -> None:
    reply = create(provider="EXTERNAL")
    assert reply.status_code == 201
    assert reply.json()["provider"] == "external"


def test_known_but_unconfigured_provider_says_which_are_enabled(create: CreateFn) -> None:
    reply = create(provider="azure")
    assert reply.status_code == 400
    assert reply.json()["error"] == "bad_request"
    assert "'azure' is not enabled" in reply.json()["message"]
    assert "enabled providers: external" in reply.json()["message"]


def test_unknown_provider_is_rejected(create: CreateFn) -> None:
    reply = create(provider="digitalocean")
    assert reply.status_code == 400
    assert "provider" in reply.json()["message"]


@pytest.mark.parametrize(
    ("spelling", "platform"),
    [
        ("sev-snp", "sev-snp"),
        ("sev_snp", "sev-snp"),
        ("snp", "sev-snp"),
        ("SEV-SNP", "sev-snp"),
        ("SEV%20SNP", "sev-snp"),
        ("tdx", "tdx"),
        ("intel-tdx", "tdx"),
        ("Intel%20TDX", "tdx"),
    ],
)
def test_platform_spellings_are_normalised(create: CreateFn, spelling: str, platform: str) -> None:
    reply = create(f"cvm-{spelling}", platform=spelling)
    assert reply.status_code == 201, reply.text
    assert reply.json()["cc_platform"] == platform


def test_unknown_platform_is_rejected(create: CreateFn) -> None:
    reply = create(platform="sgx")
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("cc_platform:")


def test_platform_the_provider_does_not_offer_is_rejected(
    aws: MemoryProvider, create: CreateFn
) -> None:
    reply = create(provider="aws", platform="tdx")
    assert reply.status_code == 400
    assert "does not offer tdx" in reply.json()["message"]


@pytest.mark.parametrize("vcpu", ["0", "-2", "two", "2.5", "1e3", "3", "٣", "7" * 4301])
def test_vcpu_not_offered_lists_the_allowed_counts(
    aws: MemoryProvider, create: CreateFn, vcpu: str
) -> None:
    reply = create(provider="aws", vcpu=vcpu)
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("vcpu:")
    assert "allowed: 2, 4, 8" in reply.json()["message"]


def test_external_accepts_any_count_from_1_to_512(create: CreateFn) -> None:
    assert create("one", vcpu="1").status_code == 201
    assert create("max", vcpu="512").status_code == 201
    too_many = create("over", vcpu="513")
    assert too_many.status_code == 400
    assert "any count from 1 to 512" in too_many.json()["message"]


def test_non_json_body_is_415(client: TestClient, token: TokenFactory) -> None:
    reply = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp",
        content=b"name=x",
        headers={**auth(token()), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 415
    assert reply.json()["error"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(client: TestClient, token: TokenFactory) -> None:
    reply = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp",
        content=b'{"name": "x"}',
        headers={**auth(token()), "Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "agent_log_levle": "info"}, "agent_log_levle"),
        ({}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": 7}, "name"),
        ({"name": "x", "agent_log_level": "verbose"}, "agent_log_level"),
        ({"name": "nul\u0000"}, "name"),
        ({"name": "x", "agent_url": "https://a\u0000"}, "agent_url"),
        ([], "body"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(
    create: CreateFn, body: object, field: str
) -> None:
    reply = create(body=body)
    assert reply.status_code == 400
    assert reply.json()["message"].startswith(f"{field}:"), reply.json()


def test_malformed_json_is_400(client: TestClient, token: TokenFactory) -> None:
    reply = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp",
        content=b'{"name": ',
        headers={**auth(token()), "Content-Type": "application/json"},
    )
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("body:")


def test_name_is_trimmed_and_log_level_defaults_to_info(create: CreateFn) -> None:
    cvm = create(body={"name": "  spaced  "}).json()
    assert cvm["name"] == "spaced"
    assert cvm["agent_log_level"] == "info"


def test_name_is_unique_among_live_cvms_only(
    client: TestClient, create: CreateFn, token: TokenFactory
) -> None:
    first = create("dup")
    assert create("dup").status_code == 409
    assert create("dup", domain="dom-2").status_code == 201
    client.delete(f"/backends/dom-1/cvms/{first.json()['id']}", headers=auth(token()))
    assert create("dup").status_code == 201


def test_agent_url_is_for_external_only(aws: MemoryProvider, create: CreateFn) -> None:
    external = create(body={"name": "e", "agent_url": "https://10.0.0.5:7002"})
    assert external.json()["agent_url"] == "https://10.0.0.5:7002"
    other = create(provider="aws", body={"name": "a", "agent_url": "https://x"})
    assert other.status_code == 400
    assert other.json()["message"].startswith("agent_url:")


def test_idempotency_key_replays_the_same_cvm(create: CreateFn) -> None:
    first = create("idem", headers={"Idempotency-Key": "k-1"})
    again = create("idem", headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]


def test_idempotency_key_with_another_body_is_409(create: CreateFn) -> None:
    assert create("idem", headers={"Idempotency-Key": "k-1"}).status_code == 201
    reply = create("other", headers={"Idempotency-Key": "k-1"})
    assert reply.status_code == 409
    assert "Idempotency-Key" in reply.json()["message"]


def test_cloud_cvm_is_pending_until_a_worker_provisions_it(
    aws: MemoryProvider, create: CreateFn
) -> None:
    cvm = create(provider="aws").json()
    assert (cvm["state"], cvm["status"], cvm["cvm_id"]) == ("pending", "starting", "")
    assert aws.ledger.calls == []  # the request only records intent


def test_external_is_provisioned_at_once(create: CreateFn) -> None:
    cvm = create().json()
    assert (cvm["state"], cvm["status"]) == ("provisioned", "starting")
    assert cvm["cvm_id"] == cvm["id"]


def test_trailing_slash_is_not_redirected(client: TestClient, token: TokenFactory) -> None:
    reply = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp%2F",
        json={"name": "slash"},
        headers=auth(token()),
        follow_redirects=False,
    )
    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"
    listed = client.get("/backends/dom-1/cvms/", headers=auth(token()), follow_redirects=False)
    assert listed.status_code == 404


@pytest.mark.parametrize(
    "agent_url",
    ["10.0.0.5:7002", "agent.example.com:7002", "[::1]:7002", "grpcs://agent.example.com:7002",
     "grpc://10.0.0.5:7002", "https://agent.example.com"],
)  # fmt: skip
def test_agent_addresses_are_accepted(create: CreateFn, agent_url: str) -> None:
    reply = create(body={"name": "addr", "agent_url": agent_url})
    assert reply.status_code == 201, reply.text
    assert reply.json()["agent_url"] == agent_url


@pytest.mark.parametrize(
    "agent_url",
    ["javascript:alert(1)", "file:///etc/passwd", "http://agent.example.com", "data:,x",
     "agent.example.com", "agent.example.com:99999", "grpc://", "https://:7002", "a b:7002"],
)  # fmt: skip
def test_what_cannot_be_an_agent_address_is_400(create: CreateFn, agent_url: str) -> None:
    reply = create(body={"name": "addr", "agent_url": agent_url})
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("agent_url:"), reply.json()


def test_a_provider_not_enabled_is_said_once_with_the_reason(create: CreateFn) -> None:
    message = create(provider="azure", body={"name": "x"}).json()["message"]
    assert message.count("not enabled") == 1
    assert "no provider file (providers_dir) turns it on" in message


def test_concurrent_retries_with_one_idempotency_key_all_get_the_one_cvm(
    client: TestClient, token: TokenFactory
) -> None:
    """A retry sent while the first attempt is still in flight is a replay, not a 409
    (on PostgreSQL the second insert waits for the first and then collides)."""
    headers = {**auth(token("dom-1")), "Idempotency-Key": "retried"}
    barrier = threading.Barrier(8)

    def attempt(_: int) -> tuple[int, str]:
        barrier.wait()
        response = client.post(
            "/backends/dom-1/cvms/external/2/sev-snp", headers=headers, json={"name": "once"}
        )
        return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert sorted(status for status, _ in outcomes) == [200] * 7 + [201], outcomes
    assert len({cvm_id for _, cvm_id in outcomes}) == 1
    listed = client.get("/backends/dom-1/cvms", headers=auth(token("dom-1"))).json()
    assert listed["total"] == 1


def test_a_create_signs_its_certificate_before_its_transaction_and_a_bad_one_opens_none(
    runtime: Runtime, create: CreateFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a writing transaction holds the store's one write lock: neither
    the certificate's signing nor a request that fails its checks holds it."""
    steps: list[str] = []
    listen(runtime.engine, "begin", lambda _connection: steps.append("begin"))
    ca = runtime.credentials.ca
    sign = ca.issue_client

    def signing(*args: Any, **kwargs: Any) -> Any:
        steps.append("sign")
        return sign(*args, **kwargs)

    monkeypatch.setattr(ca, "issue_client", signing)
    assert create("lock-free", body={"name": ""}).status_code == 400
    assert create("lock-free", headers={"Idempotency-Key": "k" * 256}).status_code == 400
    assert steps == []
    assert create("lock-free").status_code == 201
    assert steps == ["sign", "begin"]
