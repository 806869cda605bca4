"""Rate limits: per client address and per token subject, 429 with
Retry-After, loopback let through unless asked; and 503 with Retry-After
when the store is down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from prism_backends.config import Settings
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth


def _client(runtime: Runtime | FastAPI, host: str = "203.0.113.7") -> TestClient:
    app = create_app(runtime) if isinstance(runtime, Runtime) else runtime
    return TestClient(app, client=(host, 50000), raise_server_exceptions=False)


@pytest.fixture
def limited(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def _make(**overrides: Any) -> Runtime:
        runtime = Runtime(make_settings(**overrides))
        made.append(runtime)
        return runtime

    yield _make
    for runtime in made:
        runtime.close()


def test_a_client_address_past_its_rate_gets_429_with_retry_after(
    limited: Callable[..., Runtime],
) -> None:
    app = create_app(limited(rate_limit_per_source=1))  # bursts of 10
    with _client(app) as client:
        answers = [client.get("/backends/health") for _ in range(12)]
        with _client(app, host="198.51.100.9") as other:
            assert other.get("/backends/health").status_code == 200  # its own budget
    assert [a.status_code for a in answers[:10]] == [200] * 10
    refused = answers[10]
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_requests"
    assert refused.headers["Retry-After"] == "1"


def test_a_token_subject_past_its_rate_gets_429_from_any_address(
    limited: Callable[..., Runtime], token: TokenFactory
) -> None:
    app = create_app(limited(rate_limit_per_source=0, rate_limit_per_principal=0.5))  # 5 at once
    headers = auth(token())
    codes = []
    for index in range(7):
        with _client(app, host=f"203.0.113.{index + 1}") as client:
            codes.append(client.get("/backends/dom-1/cvms", headers=headers))
    assert [a.status_code for a in codes[:5]] == [200] * 5
    assert codes[5].status_code == 429
    assert int(codes[5].headers["Retry-After"]) == 2
    assert "token" in codes[5].json()["message"]


def test_loopback_is_not_limited_unless_asked(limited: Callable[..., Runtime]) -> None:
    free = limited(rate_limit_per_source=0.1)
    with _client(free, host="127.0.0.1") as client:
        assert {client.get("/backends/health").status_code for _ in range(20)} == {200}
    strict = limited(rate_limit_per_source=0.1, rate_limit_loopback=True)
    with _client(strict, host="::1") as client:
        codes = {client.get("/backends/health").status_code for _ in range(5)}
    assert codes == {200, 429}


def test_a_store_outage_is_503_with_retry_after(
    runtime: Runtime, client: TestClient, token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialect = runtime.engine.dialect

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise dialect.loaded_dbapi.OperationalError("unable to open database file")

    headers = auth(token())
    assert client.get("/backends/dom-1/cvms", headers=headers).status_code == 200
    runtime.engine.dispose()  # the next request must connect, and cannot
    monkeypatch.setattr(dialect, "connect", refuse)
    answer = client.get("/backends/dom-1/cvms", headers=headers)
    assert answer.status_code == 503
    assert answer.json()["error"] == "store_unavailable"
    assert answer.headers["Retry-After"] == "2"
    monkeypatch.undo()
    assert client.get("/backends/dom-1/cvms", headers=headers).status_code == 200
