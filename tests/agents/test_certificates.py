"""A CVM's agent certificates: listed, issued, renewed and revoked through the
API, and what the agents endpoint makes of them (a connect with a newer one
retires the older ones; a revoked one ends its stream and is refused).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from sqlalchemy import select

from prism_backends.agents.models import AgentCredential
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.agents.service import MAX_VALID_CERTIFICATES
from prism_backends.auth.permissions import Role
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from tests.agents.conftest import (
    DEADLINE_SECONDS,
    DOMAIN,
    HEARTBEAT_SECONDS,
    Api,
    Credential,
    channel_of,
    eventually,
    receive,
    serving,
)
from tests.conftest import TokenFactory, auth

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def _path(cvm_id: str, *rest: str, domain: str = DOMAIN) -> str:
    return "/".join([f"/backends/{domain}/cvms/{cvm_id}/certificates", *rest])


def _certificates(api: Api, cvm_id: str) -> list[dict[str, Any]]:
    response = api.client.get(_path(cvm_id), headers=api.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["certificates"])
    found: list[dict[str, Any]] = body["certificates"]
    return found


def _issue(api: Api, cvm_id: str) -> dict[str, Any]:
    response = api.client.post(_path(cvm_id), headers=api.headers)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def _renew(api: Api, cvm_id: str, serial: str) -> dict[str, Any]:
    response = api.client.post(_path(cvm_id, serial, "renew"), headers=api.headers)
    assert response.status_code == 201, response.text
    renewed: dict[str, Any] = response.json()
    return renewed


def _revoke(api: Api, cvm_id: str, serial: str) -> dict[str, Any]:
    response = api.client.post(_path(cvm_id, serial, "revoke"), headers=api.headers)
    assert response.status_code == 200, response.text
    revoked: dict[str, Any] = response.json()
    return revoked


def _serial(credential: Credential) -> str:
    return format(x509.load_pem_x509_certificate(credential.client_cert).serial_number, "x")


def _states(api: Api, cvm_id: str) -> dict[str, str]:
    return {found["serial"]: found["state"] for found in _certificates(api, cvm_id)}


# --- the routes ----------------------------------------------------------------------


def test_a_new_cvm_has_one_active_certificate_as_agent_config_hands_it_out(api: Api) -> None:
    cvm_id = api.create("one-cert")
    handed_out = x509.load_pem_x509_certificate(api.credential(cvm_id).client_cert)

    (listed,) = _certificates(api, cvm_id)

    der = handed_out.public_bytes(serialization.Encoding.DER)
    assert listed == {
        "serial": format(handed_out.serial_number, "x"),
        "not_before": handed_out.not_valid_before_utc.strftime(RFC3339),
        "not_after": handed_out.not_valid_after_utc.strftime(RFC3339),
        "state": "active",
        "revoked_at": None,
        "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
    }


def test_issue_renew_and_revoke(api: Api) -> None:
    cvm_id = api.create("lifecycle")
    first = _serial(api.credential(cvm_id))

    issued = _issue(api, cvm_id)
    assert issued["state"] == "pending"
    assert issued["revoked_at"] is None
    # The newest valid one is what an agent is given from now on.
    assert _serial(api.credential(cvm_id)) == issued["serial"]

    renewed = _renew(api, cvm_id, first)
    assert renewed["state"] == "pending"
    assert len({first, issued["serial"], renewed["serial"]}) == 3
    assert _serial(api.credential(cvm_id)) == renewed["serial"]
    listed = _certificates(api, cvm_id)
    assert [found["serial"] for found in listed] == [renewed["serial"], issued["serial"], first]
    assert [found["state"] for found in listed] == ["pending", "pending", "active"]

    revoked = _revoke(api, cvm_id, renewed["serial"])
    assert revoked["state"] == "revoked"
    revoked_at = datetime.strptime(revoked["revoked_at"], RFC3339).replace(tzinfo=UTC)
    assert abs(revoked_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert _serial(api.credential(cvm_id)) == issued["serial"]
    assert _states(api, cvm_id) == {
        renewed["serial"]: "revoked",
        issued["serial"]: "pending",
        first: "active",
    }

    again = api.client.post(_path(cvm_id, renewed["serial"], "revoke"), headers=api.headers)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "conflict"
    # A revoked certificate is not renewed: a new one is issued instead.
    renew_revoked = api.client.post(_path(cvm_id, renewed["serial"], "renew"), headers=api.headers)
    assert renew_revoked.status_code == 409, renew_revoked.text

    # Revoking the last valid one leaves agent_config nothing to hand out.
    _revoke(api, cvm_id, first)
    _revoke(api, cvm_id, issued["serial"])
    config = api.client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}/agent_config", headers=api.headers)
    assert config.status_code == 409, config.text
    # One issued then is the only valid one: active.
    assert _issue(api, cvm_id)["state"] == "active"


def test_serials_are_matched_as_hex_numbers(api: Api) -> None:
    cvm_id = api.create("hex")
    serial = _serial(api.credential(cvm_id))
    spelled = "00" + serial.upper()
    assert _renew(api, cvm_id, spelled)["serial"] != serial
    assert _revoke(api, cvm_id, spelled)["serial"] == serial


def test_a_member_may_list_but_not_issue_renew_or_revoke(
    api: Api, client: TestClient, token: TokenFactory
) -> None:
    cvm_id = api.create("member")
    serial = _serial(api.credential(cvm_id))
    member = auth(token(DOMAIN, role=Role.MEMBER))

    assert client.get(_path(cvm_id), headers=member).status_code == 200
    for path in (_path(cvm_id), _path(cvm_id, serial, "renew"), _path(cvm_id, serial, "revoke")):
        response = client.post(path, headers=member)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "forbidden"
    assert _states(api, cvm_id) == {serial: "active"}


def test_another_domain_sees_no_such_cvm(api: Api, client: TestClient, token: TokenFactory) -> None:
    cvm_id = api.create("theirs")
    serial = _serial(api.credential(cvm_id))
    other = auth(token("dom-2"))

    def path(*rest: str) -> str:
        return _path(cvm_id, *rest, domain="dom-2")

    assert client.get(path(), headers=other).status_code == 404
    for target in (path(), path(serial, "renew"), path(serial, "revoke")):
        response = client.post(target, headers=other)
        assert response.status_code == 404, (target, response.text)
        assert response.json()["error"] == "not_found"
    assert _states(api, cvm_id) == {serial: "active"}


def test_unknown_serials_and_cvms_are_404(api: Api) -> None:
    cvm_id = api.create("unknown")
    other_cvm = api.create("other")
    others_serial = _serial(api.credential(other_cvm))
    for serial in ("abc123", others_serial, "not-hex", "f" * 41):
        for action in ("renew", "revoke"):
            response = api.client.post(_path(cvm_id, serial, action), headers=api.headers)
            assert response.status_code == 404, (serial, action, response.text)
            assert response.json()["error"] == "not_found"
    missing = "00000000-0000-4000-8000-000000000000"
    assert api.client.get(_path(missing), headers=api.headers).status_code == 404
    assert api.client.post(_path(missing), headers=api.headers).status_code == 404
    assert api.client.get(_path("not-a-uuid"), headers=api.headers).status_code == 404


def test_the_domain_query_must_agree_with_the_path(api: Api) -> None:
    cvm_id = api.create("query")
    response = api.client.post(_path(cvm_id), params={"domainID": "dom-2"}, headers=api.headers)
    assert response.status_code == 400, response.text
    assert "domainID" in response.json()["message"]


def test_deleting_the_cvm_revokes_every_certificate(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("deleted")
    first = _serial(api.credential(cvm_id))
    second = _issue(api, cvm_id)["serial"]

    api.delete(cvm_id)

    with unit_of_work(runtime.sessions) as session:
        rows = session.execute(
            select(AgentCredential.serial, AgentCredential.revoked_at).where(
                AgentCredential.cvm_id == cvm_id
            )
        ).all()
    assert {row[0] for row in rows} == {first, second}
    assert all(row[1] is not None for row in rows)
    assert api.client.get(_path(cvm_id), headers=api.headers).status_code == 404
    for path in (_path(cvm_id), _path(cvm_id, first, "renew"), _path(cvm_id, second, "revoke")):
        response = api.client.post(path, headers=api.headers)
        assert response.status_code == 409, (path, response.text)


def test_a_cvm_holds_a_bounded_number_of_valid_certificates(api: Api) -> None:
    cvm_id = api.create("bounded")
    for _ in range(MAX_VALID_CERTIFICATES - 1):
        _issue(api, cvm_id)
    refused = api.client.post(_path(cvm_id), headers=api.headers)
    assert refused.status_code == 409, refused.text
    assert "revoke one" in refused.json()["message"]
    _revoke(api, cvm_id, _certificates(api, cvm_id)[0]["serial"])
    _issue(api, cvm_id)


# --- what the agents endpoint makes of them ---------------------------------------------


def _job(cvm_id: str) -> tuple[tuple[str, str]]:
    return (("job-id", cvm_id),)


async def _let_in(port: int, credential: Credential) -> None:
    async with channel_of(port, credential) as channel:
        call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=_job(credential.cvm_id))
        await receive(call, "agentStateReq")
        call.cancel()


async def _refused(port: int, credential: Credential) -> grpc.aio.AioRpcError:
    async with channel_of(port, credential) as channel:
        call = cvms_pb2_grpc.ServiceStub(channel).Process(
            metadata=_job(credential.cvm_id), timeout=DEADLINE_SECONDS
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _nothing_but_an_error(call)
    return caught.value


async def _nothing_but_an_error(
    call: grpc.aio.StreamStreamCall[cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage],
) -> None:
    got = await call.read()
    pytest.fail(f"the agent was let in: it got {got!r}")


def test_the_old_certificate_works_until_the_agent_connects_with_the_renewed_one(
    runtime: Runtime, api: Api
) -> None:
    cvm_id = api.create("renewal")
    old = api.credential(cvm_id)
    old_serial = _serial(old)
    renewed: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            await _let_in(endpoint.port, old)
            renewed.update(await asyncio.to_thread(_renew, api, cvm_id, old_serial))
            new = await asyncio.to_thread(api.credential, cvm_id)
            assert _serial(new) == renewed["serial"]

            # Not picked up yet: the old one still connects, and stays active.
            await _let_in(endpoint.port, old)
            await _let_in(endpoint.port, old)
            states = await asyncio.to_thread(_states, api, cvm_id)
            assert states == {old_serial: "active", renewed["serial"]: "pending"}

            await _let_in(endpoint.port, new)
            states = await asyncio.to_thread(_states, api, cvm_id)
            assert states == {old_serial: "revoked", renewed["serial"]: "active"}

            error = await _refused(endpoint.port, old)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            assert "revoked" in (error.details() or "")
            await _let_in(endpoint.port, new)  # and again: a reconnect revokes nothing more
            states = await asyncio.to_thread(_states, api, cvm_id)
            assert states == {old_serial: "revoked", renewed["serial"]: "active"}

    asyncio.run(scenario())

    retired = [event for event in api.events(cvm_id) if event["kind"] == "certificate"]
    assert len(retired) == 1, retired
    assert retired[0]["details"]["revoked"] == [old_serial]
    connected = [event for event in api.events(cvm_id) if event["kind"] == "connected"]
    serials = [event["details"]["certificate_serial"] for event in reversed(connected)]
    new_serial = renewed["serial"]
    assert serials == [old_serial, old_serial, old_serial, new_serial, new_serial]


def test_revoking_a_connected_agents_certificate_ends_its_stream(
    runtime: Runtime, api: Api
) -> None:
    cvm_id = api.create("revoked-live")
    credential = api.credential(cvm_id)
    serial = _serial(credential)

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=_job(cvm_id))
            await receive(call, "agentStateReq")

            # Revoking another (pending) certificate leaves this stream alone.
            pending = await asyncio.to_thread(_issue, api, cvm_id)
            await asyncio.to_thread(_revoke, api, cvm_id, pending["serial"])
            for _ in range(3):  # heartbeat rounds that each checked the stream's certificate
                await receive(call, "agentStateReq")

            revoked_at = asyncio.get_running_loop().time()
            await asyncio.to_thread(_revoke, api, cvm_id, serial)
            told = await receive(call, "disconnectReq")
            waited = asyncio.get_running_loop().time() - revoked_at
            assert told.disconnectReq.id == "this certificate has been revoked"
            assert waited < 10 * HEARTBEAT_SECONDS
            assert await call.read() is grpc.aio.EOF
            await eventually(lambda: cvm_id not in endpoint.hub.connections, "the stream gone")

            error = await _refused(endpoint.port, credential)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            assert "revoked" in (error.details() or "")
            assert cvm_id not in endpoint.hub.connections

    asyncio.run(scenario())


def test_an_agent_connected_with_the_renewed_certificate_outlives_the_old_stream(
    runtime: Runtime, api: Api
) -> None:
    # The agent was restarted with the new agent_config while its old stream
    # was still open: the old one is told to go, the new one stays.
    cvm_id = api.create("overlap")
    old = api.credential(cvm_id)
    _renew(api, cvm_id, _serial(old))
    new = api.credential(cvm_id)

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, old) as old_channel:
            old_call = cvms_pb2_grpc.ServiceStub(old_channel).Process(metadata=_job(cvm_id))
            await receive(old_call, "agentStateReq")
            async with channel_of(endpoint.port, new) as new_channel:
                new_call = cvms_pb2_grpc.ServiceStub(new_channel).Process(metadata=_job(cvm_id))
                await receive(new_call, "agentStateReq")
                await receive(old_call, "disconnectReq")
                for _ in range(3):
                    message = await receive(new_call, "agentStateReq")
                    assert isinstance(message, cvms_pb2.ServerStreamMessage)
                assert endpoint.hub.connections[cvm_id].serial == _serial(new)
                new_call.cancel()

    asyncio.run(scenario())
    assert _states(api, cvm_id) == {_serial(old): "revoked", _serial(new): "active"}
