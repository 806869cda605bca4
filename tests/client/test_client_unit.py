"""The SDK against scripted answers (httpx.MockTransport): the requests it
builds, how it reads answers and maps errors, for routes whose service side is
built elsewhere (offerings, certificates) as for the rest; and wait_running."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from prism_backends.client import (
    APIError,
    AsyncClient,
    AuthError,
    BadRequest,
    Client,
    Conflict,
    CVMFailed,
    NotFound,
    RateLimited,
    TransportError,
    Unavailable,
    UnexpectedResponse,
    WaitTimeout,
    domain_claim,
)

BASE = "http://service.test/backends"
DOMAIN = "acme"
CVM_ID = "0b7c4d2e-1111-4222-8333-444455556666"
SERIAL = "5f0a"

Handler = Callable[[httpx.Request], httpx.Response]


def cvm(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": CVM_ID, "name": "web-1", "cvm_id": "", "agent_url": "", "status": "starting",
        "state": "pending", "created_at": "2026-12-02T10:00:00Z",
        "deleted_at": "0001-01-01T00:00:00Z", "provider": "external", "vcpus": 2,
        "attestation": "", "attestation_token": "", "agent_log_level": "info",
        "monthly_cost_estimate": "$0.00", "cc_platform": "sev-snp", "domain_id": DOMAIN,
        "error": "", "attestation_error": "", "updated_at": "2026-12-02T10:00:00Z",
    }  # fmt: skip
    document.update(changes)
    return document


def certificate(state: str = "pending") -> dict[str, Any]:
    return {
        "serial": SERIAL, "not_before": "2026-12-02T10:00:00Z",
        "not_after": "2027-12-02T10:00:00Z", "state": state,
        "revoked_at": "2026-12-02T11:00:00Z" if state == "revoked" else None,
        "fingerprint_sha256": "ab" * 32,
    }  # fmt: skip


def token_for(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'EdDSA'})}.{part(claims)}.c2lnbmF0dXJl"


TOKEN = token_for({"sub": "admin", "domain": DOMAIN, "role": "admin"})


class Recorder:
    """A MockTransport handler that answers from a script and keeps the requests."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def client(recorder: Recorder, token: str = TOKEN) -> Client:
    return Client(BASE, token, transport=httpx.MockTransport(recorder))


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message}, headers=headers)


# --- requests -----------------------------------------------------------------------------------


def test_create_sends_the_body_the_idempotency_key_and_the_token() -> None:
    recorder = Recorder(httpx.Response(201, json=cvm()))
    with client(recorder) as api:
        made = api.create_cvm("external", 2, "sev-snp", "web-1", "debug", idempotency_key="k-1")
    request = recorder.last
    assert request.method == "POST"
    assert request.url.path == f"/backends/{DOMAIN}/cvms/external/2/sev-snp"
    assert json.loads(request.content) == {"name": "web-1", "agent_log_level": "debug"}
    assert request.headers["Idempotency-Key"] == "k-1"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"].startswith("prism-backends-client/")
    assert made.id == CVM_ID and made.state == "pending"


def test_list_sends_only_the_filters_given() -> None:
    page = {"cvms": [cvm()], "total": 1, "limit": 5, "offset": 0}
    recorder = Recorder(httpx.Response(200, json=page))
    with client(recorder) as api:
        got = api.list_cvms(name="web", cc_platform="tdx", limit=5)
    assert dict(recorder.last.url.params) == {"name": "web", "cc_platform": "tdx", "limit": "5"}
    assert got.total == 1 and got.cvms[0].name == "web-1"


def test_iter_cvms_walks_every_page_and_stops_at_the_total() -> None:
    def pages(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        shown = [cvm(id=f"cvm-{i}") for i in range(offset, min(offset + 2, 5))]
        return httpx.Response(200, json={"cvms": shown, "total": 5, "limit": 2, "offset": offset})

    recorder = Recorder(pages)
    with client(recorder) as api:
        ids = [found.id for found in api.iter_cvms(status="running", page_size=2)]
    assert ids == [f"cvm-{i}" for i in range(5)]
    assert [r.url.params["offset"] for r in recorder.requests] == ["0", "2", "4"]
    assert all(r.url.params["status"] == "running" for r in recorder.requests)


def test_iter_events_stops_on_an_empty_page_even_if_the_total_says_more() -> None:
    event = {
        "id": "7", "cvm_id": CVM_ID, "kind": "log", "timestamp": "2026-12-02T10:00:00Z",
        "received_at": "2026-12-02T10:00:00Z", "level": "info", "message": "hi",
        "computation_id": "", "details": {},
    }  # fmt: skip
    recorder = Recorder(
        httpx.Response(200, json={"events": [event], "total": 9, "limit": 1, "offset": 0}),
        httpx.Response(200, json={"events": [], "total": 9, "limit": 1, "offset": 1}),
    )
    with client(recorder) as api:
        assert [e.message for e in api.iter_events(CVM_ID, page_size=1)] == ["hi"]
    assert len(recorder.requests) == 2


def test_policy_is_decoded_to_its_bytes() -> None:
    stored = b'{"policy": {"measurement": "00"}}'
    body = {"attestation_policy": base64.b64encode(stored).decode()}
    recorder = Recorder(httpx.Response(200, json=body))
    with client(recorder) as api:
        assert api.attestation_policy(CVM_ID, policy_format="json") == stored
    assert recorder.last.url.path.endswith(f"/cvms/{CVM_ID}/attestation_policy")
    assert recorder.last.url.params["format"] == "json"


def test_offerings_are_read_in_the_agreed_shape() -> None:
    body = {
        "providers": [
            {
                "name": "external",
                "provisions_instantly": True,
                "platforms": [
                    {"cc_platform": "sev-snp",
                     "vcpus": [{"vcpus": 2, "monthly_cost_estimate": "$0.00"}]},
                    {"cc_platform": "tdx", "vcpus": []},
                ],
            }
        ],
        "unavailable": [{"name": "gcp", "reason": "no credentials"}],
    }  # fmt: skip
    recorder = Recorder(httpx.Response(200, json=body))
    with client(recorder) as api:
        offerings = api.offerings()
    assert recorder.last.url.path == f"/backends/{DOMAIN}/offerings"
    external = offerings.providers[0]
    assert external.provisions_instantly
    assert external.platforms[0].vcpus[0].monthly_cost_estimate == "$0.00"
    assert offerings.unavailable[0].reason == "no credentials"


def test_certificate_routes() -> None:
    listing = {"certificates": [certificate("active")], "total": 1}
    recorder = Recorder(
        httpx.Response(200, json=listing),
        httpx.Response(201, json=certificate()),
        httpx.Response(201, json=certificate()),
        httpx.Response(200, json=certificate("revoked")),
    )
    with client(recorder) as api:
        assert api.certificates(CVM_ID).certificates[0].state == "active"
        assert api.issue_certificate(CVM_ID).state == "pending"
        assert api.renew_certificate(CVM_ID, SERIAL).serial == SERIAL
        revoked = api.revoke_certificate(CVM_ID, SERIAL)
    assert revoked.state == "revoked" and revoked.revoked_at is not None
    base = f"/backends/{DOMAIN}/cvms/{CVM_ID}/certificates"
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        ("GET", base),
        ("POST", base),
        ("POST", f"{base}/{SERIAL}/renew"),
        ("POST", f"{base}/{SERIAL}/revoke"),
    ]


def test_revoking_twice_is_a_conflict_with_its_code() -> None:
    recorder = Recorder(error(409, "conflict", "certificate 5f0a is already revoked"))
    with client(recorder) as api, pytest.raises(Conflict) as raised:
        api.revoke_certificate(CVM_ID, SERIAL)
    assert (raised.value.status, raised.value.code) == (409, "conflict")
    assert "already revoked" in raised.value.message


def test_path_segments_are_quoted() -> None:
    recorder = Recorder(error(404, "not_found", "no such CVM"))
    with client(recorder) as api, pytest.raises(NotFound):
        api.get_cvm("../x y")
    assert recorder.last.url.raw_path == f"/backends/{DOMAIN}/cvms/..%2Fx%20y".encode()


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (error(400, "bad_request", "vcpus: must be one of 2, 4"), BadRequest, "bad_request"),
        (error(401, "unauthorized", "token expired"), AuthError, "unauthorized"),
        (error(403, "forbidden", "needs cvms:create"), AuthError, "forbidden"),
        (error(404, "not_found", "no CVM"), NotFound, "not_found"),
        (error(409, "conflict", "name taken"), Conflict, "conflict"),
        (error(429, "too_many_requests", "slow down", **{"Retry-After": "3"}), RateLimited,
         "too_many_requests"),
        (error(503, "store_unavailable", "no store", **{"Retry-After": "2"}), Unavailable,
         "store_unavailable"),
        (error(413, "payload_too_large", "too big"), APIError, "payload_too_large"),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), APIError, "http_502"),
    ],
)  # fmt: skip
def test_error_answers_map_to_exceptions_with_status_and_code(
    answer: httpx.Response, kind: type[APIError], code: str
) -> None:
    with client(Recorder(answer)) as api, pytest.raises(kind) as raised:
        api.get_cvm(CVM_ID)
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.code) == (answer.status_code, code)
    assert raised.value.message
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == 3.0
    if isinstance(raised.value, Unavailable):
        assert raised.value.retry_after == 2.0


def test_a_refused_connection_is_a_transport_error_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with client(Recorder(refuse)) as api, pytest.raises(TransportError) as raised:
        api.list_cvms()
    assert raised.value.url == BASE
    assert f"cannot reach {BASE}" in str(raised.value)
    assert "refused" in raised.value.reason


def test_a_success_answer_of_the_wrong_shape_is_unexpected() -> None:
    wrong = Recorder(httpx.Response(200, text="<html>login</html>"))
    with client(wrong) as api, pytest.raises(UnexpectedResponse):
        api.get_cvm(CVM_ID)


# --- configuration ------------------------------------------------------------------------------


def test_the_domain_comes_from_the_token_unless_given() -> None:
    recorder = Recorder(error(404, "not_found", "none"))
    with client(recorder) as api:
        assert api.domain == DOMAIN
    other = Client(BASE, TOKEN, "other", transport=httpx.MockTransport(recorder))
    with other as api, pytest.raises(NotFound):
        api.get_cvm(CVM_ID)
    assert recorder.last.url.path.startswith("/backends/other/")


def test_domain_claim() -> None:
    assert domain_claim(TOKEN) == DOMAIN
    assert domain_claim(token_for({"domains": {"solo": "member"}})) == "solo"
    assert domain_claim(token_for({"domains": {"a": "admin", "b": "admin"}})) is None
    assert domain_claim("not-a-jwt") is None
    assert domain_claim("a.%%%.c") is None


def test_a_client_needs_a_url_with_a_scheme_and_a_domain() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:9011/backends", TOKEN)
    with pytest.raises(ValueError, match="domain"):
        Client(BASE, "opaque-token")


# --- waiting ---------------------------------------------------------------------------------


def test_wait_running_reports_progress_and_returns_the_running_cvm() -> None:
    recorder = Recorder(
        httpx.Response(200, json=cvm(state="provisioning")),
        error(503, "store_unavailable", "failover", **{"Retry-After": "0"}),
        httpx.Response(200, json=cvm(state="provisioned")),
        httpx.Response(200, json=cvm(state="provisioned", status="running")),
    )
    seen: list[tuple[str, str]] = []
    with client(recorder) as api:
        done = api.wait_running(
            CVM_ID, timeout=10, poll=0.01, on_progress=lambda c: seen.append((c.state, c.status))
        )
    assert done.status == "running"
    assert seen == [
        ("provisioning", "starting"),
        ("provisioned", "starting"),
        ("provisioned", "running"),
    ]


def test_wait_running_raises_the_failure_reason() -> None:
    failed = cvm(state="failed", status="failed", error="quota exceeded in eu-west-1")
    failing = Recorder(httpx.Response(200, json=failed))
    with client(failing) as api, pytest.raises(CVMFailed) as raised:
        api.wait_running(CVM_ID, timeout=5, poll=0.01)
    assert "quota exceeded in eu-west-1" in raised.value.reason
    assert raised.value.cvm.state == "failed"


def test_wait_running_times_out_with_the_last_state() -> None:
    provisioned = Recorder(httpx.Response(200, json=cvm(state="provisioned")))
    with client(provisioned) as api, pytest.raises(WaitTimeout) as raised:
        api.wait_running(CVM_ID, timeout=0.2, poll=0.05)
    assert raised.value.cvm.state == "provisioned"
    assert "not running after 0.2 s" in str(raised.value)


def test_wait_running_does_not_wait_out_a_not_found() -> None:
    with client(Recorder(error(404, "not_found", "no CVM"))) as api, pytest.raises(NotFound):
        api.wait_running(CVM_ID, timeout=30, poll=0.01)


# --- async -----------------------------------------------------------------------------------


def test_the_async_client_builds_the_same_requests_and_maps_the_same_errors() -> None:
    def pages(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/certificates"):
            return httpx.Response(201, json=certificate())
        if request.url.path.endswith("/missing"):
            return error(404, "not_found", "no CVM missing")
        offset = int(request.url.params.get("offset", "0"))
        shown = [cvm(id=f"cvm-{i}")] if (i := offset) < 3 else []
        return httpx.Response(200, json={"cvms": shown, "total": 3, "limit": 1, "offset": offset})

    recorder = Recorder(pages)

    async def run() -> tuple[list[str], str]:
        async with AsyncClient(BASE, TOKEN, transport=httpx.MockTransport(recorder)) as api:
            ids = [found.id async for found in api.iter_cvms(page_size=1)]
            issued = await api.issue_certificate(CVM_ID)
            with pytest.raises(NotFound) as raised:
                await api.get_cvm("missing")
            assert raised.value.code == "not_found"
            return ids, issued.state

    ids, state = asyncio.run(run())
    assert ids == ["cvm-0", "cvm-1", "cvm-2"]
    assert state == "pending"
    assert recorder.requests[-2].method == "POST"


def test_the_sdk_loads_no_server_code() -> None:
    """Importing a package runs its parents' ``__init__`` too, which the import
    contract does not follow: check what a fresh interpreter really loads."""
    import subprocess
    import sys

    probe = (
        "import sys, prism_backends.client\n"
        "server = ('sqlalchemy', 'fastapi', 'starlette', 'uvicorn', 'grpc', 'typer', 'psycopg')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in server))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
