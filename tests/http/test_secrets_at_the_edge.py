"""Credentials at the HTTP edge: query strings are redacted in the access log
(a token sent as ?access_token= is refused, and must not be logged either),
and the agent configuration (it holds a private key) is never cached."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from prism_backends.http import access_log
from tests.conftest import TokenFactory, auth


def _access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", path, "1.1", 401), None,
    )  # fmt: skip


def test_query_values_are_redacted_in_the_access_log() -> None:
    record = _access_record("/backends/d/cvms?limit=10&access_token=eyJhbGciOi.secret.sig")
    assert access_log.RedactQueryStrings().filter(record)
    line = record.getMessage()
    assert "eyJhbGciOi" not in line and "secret" not in line
    assert "/backends/d/cvms?limit=***&access_token=***" in line
    plain = _access_record("/backends/health")
    access_log.RedactQueryStrings().filter(plain)
    assert "/backends/health" in plain.getMessage()


def test_the_filter_is_installed_once_on_uvicorns_access_logger() -> None:
    access_log.install()
    access_log.install()
    filters = logging.getLogger("uvicorn.access").filters
    assert sum(isinstance(f, access_log.RedactQueryStrings) for f in filters) == 1


def test_agent_config_is_not_cacheable(client: TestClient, token: TokenFactory) -> None:
    created = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp", json={"name": "cfg"}, headers=auth(token())
    )
    assert created.status_code == 201, created.text
    reply = client.get(
        f"/backends/dom-1/cvms/{created.json()['id']}/agent_config", headers=auth(token())
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
