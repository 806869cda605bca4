"""``--log-format json`` and the request id, in-process (the real processes'
logs are read in test_processes_apart.py)."""

from __future__ import annotations

import json
import logging
import re
import sys

from fastapi.testclient import TestClient

from prism_backends.observability import context
from prism_backends.observability.logs import JsonLines, formatter


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc else None
    return logging.LogRecord(
        "prism_backends.test", logging.WARNING, __file__, 1, message, args, info
    )


def test_a_json_line_says_what_it_is_about() -> None:
    scope = {"path_params": {"domainID": "dom-7", "id": "cvm-from-path"}}
    context.enter_request(scope, "req-42")
    try:
        line = json.loads(JsonLines().format(_record("CVM %s is %s", "a", "up")))
        with context.about_cvm("cvm-from-worker"):
            inner = json.loads(JsonLines().format(_record("x")))
    finally:
        context.enter_request({}, "")
    assert line["message"] == "CVM a is up"
    assert (line["level"], line["logger"]) == ("warning", "prism_backends.test")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert (line["request_id"], line["domain"], line["cvm_id"]) == (
        "req-42",
        "dom-7",
        "cvm-from-path",
    )
    assert inner["cvm_id"] == "cvm-from-worker"


def test_without_context_a_line_has_only_its_own_fields() -> None:
    context.enter_request({}, "")
    line = json.loads(JsonLines().format(_record("plain")))
    assert set(line) == {"time", "level", "logger", "message"}


def test_an_exception_stays_inside_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        text = JsonLines().format(_record("failed", exc=True))
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_text_is_the_default_format() -> None:
    assert not isinstance(formatter("text"), JsonLines)
    assert isinstance(formatter("json"), JsonLines)


def test_the_request_id_is_taken_from_the_caller_or_made(client: TestClient) -> None:
    given = client.get("/backends/health", headers={"X-Request-ID": "trace-1.2:3"})
    assert given.headers["x-request-id"] == "trace-1.2:3"
    made = client.get("/backends/health")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    # An id that could forge a log field or flood a line is replaced.
    for unfit in ('a" "level": "error', "x" * 129):
        replaced = client.get("/backends/health", headers={"X-Request-ID": unfit})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    # Errors carry it too.
    missing = client.get("/backends/no/such", headers={"X-Request-ID": "lost-1"})
    assert (missing.status_code, missing.headers["x-request-id"]) == (404, "lost-1")
