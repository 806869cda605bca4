"""GET .../statistics and GET .../attestation_policy."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from prism_backends.db.base import utcnow
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import State
from tests.conftest import TokenFactory, auth
from tests.factories import insert_cvm, insert_samples


def _stats(
    client: TestClient, token: TokenFactory, cvm_id: str, query: str = ""
) -> dict[str, object]:
    reply = client.get(f"/backends/dom-1/cvms/{cvm_id}/statistics{query}", headers=auth(token()))
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


def test_samples_newest_first_within_the_window(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    cvm_id = insert_cvm(runtime.sessions)
    now = utcnow()
    insert_samples(
        runtime.sessions,
        cvm_id,
        [(now - timedelta(hours=h), h % 4 != 0) for h in range(0, 72, 2)],
    )
    day = _stats(client, token, cvm_id)
    samples = day["cvm_stats"]
    assert isinstance(samples, list)
    assert len(samples) == day["total"] == 12
    stamps = [sample["timestamp"] for sample in samples]
    assert stamps == sorted(stamps, reverse=True)
    assert set(samples[0]) == {"id", "cvm_id", "timestamp", "status"}
    assert samples[0]["cvm_id"] == cvm_id and isinstance(samples[0]["id"], str)
    assert samples[0]["status"] is False and samples[1]["status"] is True  # h=0 down, h=2 up
    assert day["uptime"] == pytest.approx(6 / 12)
    assert _stats(client, token, cvm_id, "?days=7")["total"] == 36


def test_paging_through_samples(client: TestClient, runtime: Runtime, token: TokenFactory) -> None:
    cvm_id = insert_cvm(runtime.sessions)
    now = utcnow()
    insert_samples(
        runtime.sessions, cvm_id, [(now - timedelta(minutes=5 * i), True) for i in range(10)]
    )
    page = _stats(client, token, cvm_id, "?limit=3&offset=3")
    samples = page["cvm_stats"]
    assert isinstance(samples, list)
    assert len(samples) == 3 and page["total"] == 10


def test_no_samples_means_no_uptime(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    page = _stats(client, token, insert_cvm(runtime.sessions))
    assert (page["cvm_stats"], page["total"], page["uptime"]) == ([], 0, 0.0)


@pytest.mark.parametrize("query", ["?days=0", "?days=91", "?days=x", "?limit=0"])
def test_window_beyond_retention_or_malformed_is_400(
    client: TestClient, runtime: Runtime, token: TokenFactory, query: str
) -> None:
    cvm_id = insert_cvm(runtime.sessions)
    reply = client.get(f"/backends/dom-1/cvms/{cvm_id}/statistics{query}", headers=auth(token()))
    assert reply.status_code == 400


def test_days_up_to_the_retention(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    assert _stats(client, token, insert_cvm(runtime.sessions), "?days=90")["total"] == 0


def test_policy_is_the_stored_bytes_as_base64(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    policy = b'{"policy": {"measurement": "AAEC"}, "root_of_trust": {"product_line": "Milan"}}'
    cvm_id = insert_cvm(runtime.sessions, policy=policy)
    reply = client.get(f"/backends/dom-1/cvms/{cvm_id}/attestation_policy", headers=auth(token()))
    assert reply.status_code == 200
    assert base64.b64decode(reply.json()["attestation_policy"]) == policy


@pytest.mark.parametrize(
    ("state", "reason"),
    [(State.PROVISIONING, "still provisioning"), (State.PROVISIONED, "no reference values")],
)
def test_policy_not_available_is_409_saying_why(
    client: TestClient, runtime: Runtime, token: TokenFactory, state: State, reason: str
) -> None:
    cvm_id = insert_cvm(runtime.sessions, state=state)
    reply = client.get(f"/backends/dom-1/cvms/{cvm_id}/attestation_policy", headers=auth(token()))
    assert reply.status_code == 409
    assert reason in reply.json()["message"]


MEASUREMENT_B64 = base64.b64encode(bytes(range(48))).decode()


def _policy_as(
    client: TestClient, token: TokenFactory, cvm_id: str, form: str
) -> tuple[int, dict[str, object]]:
    reply = client.get(
        f"/backends/dom-1/cvms/{cvm_id}/attestation_policy?format={form}", headers=auth(token())
    )
    body: dict[str, object] = reply.json()
    return reply.status_code, body


def test_policy_converts_to_corim_and_back_to_json(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    import json

    from prism_backends.attestation import corim

    policy = json.dumps(
        {"policy": {"measurement": MEASUREMENT_B64, "policy": 196608},
         "root_of_trust": {"product_line": "Milan"}}
    ).encode()  # fmt: skip
    cvm_id = insert_cvm(runtime.sessions, policy=policy)
    status, body = _policy_as(client, token, cvm_id, "corim")
    assert status == 200, body
    as_corim = base64.b64decode(str(body["attestation_policy"]))
    assert corim.is_corim(as_corim)
    assert corim.parse(as_corim, "sev-snp").values["measurement"] == bytes(range(48))

    corim_cvm = insert_cvm(runtime.sessions, policy=as_corim)
    status, body = _policy_as(client, token, corim_cvm, "json")
    assert status == 200, body
    back = json.loads(base64.b64decode(str(body["attestation_policy"])))
    assert back["policy"]["measurement"] == MEASUREMENT_B64
    assert back["policy"]["policy"] == 196608


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        (b'{"policy": {"measurement": "AAEC", "report_id_ma": "AA=="}}', "report_id_ma"),
        (b'{"policy": {}, "pcr_values": {"sha256": {"15": "00"}}}', "pcr_values"),
    ],
)
def test_policy_that_a_corim_cannot_express_is_400_naming_it(
    client: TestClient, runtime: Runtime, token: TokenFactory, policy: bytes, named: str
) -> None:
    status, body = _policy_as(client, token, insert_cvm(runtime.sessions, policy=policy), "corim")
    assert status == 400
    assert named in str(body["message"]) and "format" in str(body["message"])


def test_an_unknown_policy_format_is_400(
    client: TestClient, runtime: Runtime, token: TokenFactory
) -> None:
    status, body = _policy_as(client, token, insert_cvm(runtime.sessions, policy=b"{}"), "yaml")
    assert status == 400 and "format" in str(body["message"])
