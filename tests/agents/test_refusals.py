"""Who the agents endpoint lets in, and what it keeps of those it does.

An agent is its CVM's client certificate (issued at create, revoked at
delete) plus, optionally, ``job-id`` metadata naming that same CVM. Every
refusal must leave no trace: no session row, no event row, the status as it
was. The endpoint runs in each test's own event loop (``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509
from sqlalchemy import select, update

from prism_backends.agents.models import AgentCredential, AgentSession
from prism_backends.agents.pki import IssuedCertificate, create_ca
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.agents.server import AgentsEndpoint
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from tests.agents.conftest import (
    DEADLINE_SECONDS,
    DOMAIN,
    Api,
    Credential,
    Footprint,
    azure_token,
    channel_of,
    eventually,
    footprint,
    receive,
    secure_channel,
    serving,
)

REPORT = bytes(range(256)) * 3 + b"\xff\xfe not UTF-8"
JWT = azure_token()
LOGGED_AT = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
EVENT_AT = datetime(2030, 1, 2, 3, 4, 6, 500000, tzinfo=UTC)


def _job(cvm_id: str) -> tuple[tuple[str, str]]:
    return (("job-id", cvm_id),)


async def _refusal(channel: grpc.aio.Channel, job_id: str) -> grpc.aio.AioRpcError:
    """Open ``Process`` as an agent would; it must end in an error before any
    message (a refused agent does not even get an agentStateReq)."""
    async with channel:
        call = cvms_pb2_grpc.ServiceStub(channel).Process(
            metadata=_job(job_id), timeout=DEADLINE_SECONDS
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _nothing_but_an_error(call)
    return caught.value


async def _nothing_but_an_error(
    call: grpc.aio.StreamStreamCall[cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage],
) -> None:
    got = await call.read()
    pytest.fail(f"the agent was let in: it got {got!r}")


async def _assert_untouched(
    runtime: Runtime, endpoint: AgentsEndpoint, before: dict[str, Footprint]
) -> None:
    await endpoint.hub.flush()  # whatever the refused streams left to write, now
    assert not set(endpoint.hub.connections) & set(before)
    after = {cvm_id: await asyncio.to_thread(footprint, runtime, cvm_id) for cvm_id in before}
    assert after == before


async def _let_in(port: int, credential: Credential) -> None:
    """Control: this credential is welcome (so a refusal above was for what it tested)."""
    async with channel_of(port, credential) as channel:
        call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=_job(credential.cvm_id))
        await receive(call, "agentStateReq")
        call.cancel()


def _fresh(runtime: Runtime, *cvm_ids: str) -> dict[str, Footprint]:
    prints = {cvm_id: footprint(runtime, cvm_id) for cvm_id in cvm_ids}
    for cvm_id, seen in prints.items():
        assert (seen.sessions, seen.events) == (0, 0), cvm_id
    return prints


def _replace_credential(runtime: Runtime, cvm_id: str, issued: IssuedCertificate) -> None:
    """Make ``issued`` this CVM's credential, as CredentialIssuer would have stored it."""
    with unit_of_work(runtime.sessions) as session:
        changed = session.execute(
            update(AgentCredential)
            .where(AgentCredential.cvm_id == cvm_id)
            .values(
                serial=format(issued.serial, "x"),
                cert_pem=issued.cert_pem.decode(),
                sealed_key=runtime.sealer.seal(issued.key_pem, bound_to=cvm_id),
                not_after=issued.not_after,
                revoked_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        assert getattr(changed, "rowcount", 0) == 1


# --- refusals ---------------------------------------------------------------------------


def test_no_client_certificate_fails_the_tls_handshake(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("no-client-cert")
    credential = api.credential(cvm_id)
    before = _fresh(runtime, cvm_id)

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            error = await _refusal(secure_channel(endpoint.port, credential.ca_cert), cvm_id)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            await _assert_untouched(runtime, endpoint, before)
            await _let_in(endpoint.port, credential)

    asyncio.run(scenario())


def test_a_certificate_from_another_ca_fails_the_tls_handshake(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("foreign-ca")
    genuine = api.credential(cvm_id)
    # Same CVM id, same shape, signed by a CA the endpoint does not trust.
    forged = create_ca("not the agents CA").issue_client(cvm_id, DOMAIN, timedelta(days=1))
    before = _fresh(runtime, cvm_id)

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            channel = secure_channel(
                endpoint.port, genuine.ca_cert, forged.cert_pem, forged.key_pem
            )
            error = await _refusal(channel, cvm_id)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            await _assert_untouched(runtime, endpoint, before)
            await _let_in(endpoint.port, genuine)

    asyncio.run(scenario())


def test_an_expired_certificate_is_refused(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("expired")
    ca_cert = api.credential(cvm_id).ca_cert
    long_ago = utcnow() - timedelta(days=2)
    expired = runtime.agent_ca.issue_client(cvm_id, DOMAIN, timedelta(hours=1), now=long_ago)
    assert expired.not_after < utcnow()
    _replace_credential(runtime, cvm_id, expired)
    # Only its validity is wrong: it is the CVM's only certificate, which the
    # API no longer hands out (it hands out valid ones only).
    response = api.client.get(f"/backends/{DOMAIN}/cvms/{cvm_id}/agent_config", headers=api.headers)
    assert response.status_code == 409, response.text
    handed_out = Credential(cvm_id, ca_cert, expired.cert_pem, expired.key_pem)
    before = _fresh(runtime, cvm_id)

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            error = await _refusal(channel_of(endpoint.port, handed_out), cvm_id)
            # gRPC's TLS stack checks the validity period before the service
            # sees the certificate: the handshake fails.
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            await _assert_untouched(runtime, endpoint, before)

            # The same thing, valid now, is let in.
            valid = runtime.agent_ca.issue_client(cvm_id, DOMAIN, timedelta(hours=1))
            await asyncio.to_thread(_replace_credential, runtime, cvm_id, valid)
            await _let_in(endpoint.port, Credential(cvm_id, ca_cert, valid.cert_pem, valid.key_pem))

    asyncio.run(scenario())


def test_a_revoked_certificate_is_refused(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("revoked")
    credential = api.credential(cvm_id)
    api.delete(cvm_id)  # revokes its credential
    before = _fresh(runtime, cvm_id)

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            error = await _refusal(channel_of(endpoint.port, credential), cvm_id)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            assert "revoked" in (error.details() or ""), error
            await _assert_untouched(runtime, endpoint, before)

    asyncio.run(scenario())
    assert _fresh(runtime, cvm_id) == before


def test_a_retired_certificate_does_not_end_the_stream_that_replaced_it(
    runtime: Runtime, api: Api
) -> None:
    """The old certificate is refused, and the open stream with the renewed one
    keeps its session and goes on being asked its state."""
    cvm_id = api.create("renewed")
    retired = api.credential(cvm_id)
    serial = format(x509.load_pem_x509_certificate(retired.client_cert).serial_number, "x")
    response = api.client.post(
        f"/backends/{DOMAIN}/cvms/{cvm_id}/certificates/{serial}/renew", headers=api.headers
    )
    assert response.status_code == 201, response.text
    renewed = api.credential(cvm_id)  # the newest valid one: the renewal
    assert renewed.client_cert != retired.client_cert

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, renewed) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=_job(cvm_id))
            await receive(call, "agentStateReq")  # this connect revoked the older one
            current = endpoint.hub.connections[cvm_id]

            error = await _refusal(channel_of(endpoint.port, retired), cvm_id)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            assert "revoked" in (error.details() or ""), error

            assert endpoint.hub.connections[cvm_id] is current
            assert not current.closing
            await endpoint.hub.heartbeat()
            await receive(call, "agentStateReq")
            assert (await asyncio.to_thread(footprint, runtime, cvm_id)).sessions == 1
            call.cancel()

    asyncio.run(scenario())


def test_a_job_id_naming_another_cvm_is_refused(runtime: Runtime, api: Api) -> None:
    mine, theirs = api.create("mine"), api.create("theirs")
    credential = api.credential(mine)
    before = _fresh(runtime, mine, theirs)

    async def scenario() -> None:
        async with serving(runtime) as endpoint:
            error = await _refusal(channel_of(endpoint.port, credential), theirs)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
            await _assert_untouched(runtime, endpoint, before)

    asyncio.run(scenario())
    assert _fresh(runtime, mine, theirs) == before


# --- the agent that is let in --------------------------------------------------------


def _session_row(runtime: Runtime, cvm_id: str) -> AgentSession | None:
    with unit_of_work(runtime.sessions) as session:
        return session.scalars(select(AgentSession).where(AgentSession.cvm_id == cvm_id)).first()


def test_the_right_certificate_is_asked_its_state_and_the_answer_makes_it_running(
    runtime: Runtime, api: Api
) -> None:
    cvm_id = api.create("welcome")
    credential = api.credential(cvm_id)
    assert api.cvm(cvm_id)["status"] == "starting"

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=_job(cvm_id))
            first = await asyncio.wait_for(call.read(), DEADLINE_SECONDS)
            assert isinstance(first, cvms_pb2.ServerStreamMessage), first
            assert first.WhichOneof("message") == "agentStateReq"
            assert first.agentStateReq.id

            # Connected is not running: answering is.
            await endpoint.hub.flush()
            assert (await asyncio.to_thread(api.cvm, cvm_id))["status"] == "starting"
            row = await asyncio.to_thread(_session_row, runtime, cvm_id)
            assert row is not None
            assert row.last_seen_at is None

            await call.write(
                cvms_pb2.ClientStreamMessage(
                    agentStateRes=cvms_pb2.AgentStateRes(id=first.agentStateReq.id, state="ready")
                )
            )
            await eventually(
                lambda: api.cvm(cvm_id)["status"] == "running", "the CVM to be running"
            )
            row = await asyncio.to_thread(_session_row, runtime, cvm_id)
            assert row is not None
            assert row.last_seen_at is not None

            # The agent hangs up: the stream ends and the CVM is offline.
            await call.done_writing()
            while await asyncio.wait_for(call.read(), DEADLINE_SECONDS) is not grpc.aio.EOF:
                pass
            assert await call.code() == grpc.StatusCode.OK
            await eventually(
                lambda: api.cvm(cvm_id)["status"] == "offline", "the CVM to be offline"
            )

    asyncio.run(scenario())
    assert _session_row(runtime, cvm_id) is None
    kinds = [event["kind"] for event in reversed(api.events(cvm_id))]
    assert kinds == ["connected", "state", "disconnected"]


def test_evidence_logs_and_events_reach_the_api(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("evidence")
    credential = api.credential(cvm_id)
    log_stamp = cvms_pb2.AgentLog().timestamp
    log_stamp.FromDatetime(LOGGED_AT)
    event_stamp = cvms_pb2.AgentEvent().timestamp
    event_stamp.FromDatetime(EVENT_AT)
    said = [
        cvms_pb2.ClientStreamMessage(
            vTPMattestationReport=cvms_pb2.AttestationResponse(file=REPORT, certSerialNumber="0a1b")
        ),
        cvms_pb2.ClientStreamMessage(
            azureAttestationToken=cvms_pb2.azureAttestationToken(
                file=JWT.encode(), certSerialNumber="0a1b"
            )
        ),
        cvms_pb2.ClientStreamMessage(
            agent_log=cvms_pb2.AgentLog(
                message="computation comp-1 started",
                computation_id="comp-1",
                level="warn",
                timestamp=log_stamp,
            )
        ),
        cvms_pb2.ClientStreamMessage(
            agent_event=cvms_pb2.AgentEvent(
                event_type="algorithm-run",
                timestamp=event_stamp,
                computation_id="comp-1",
                details=b'{"progress": 50}',
                originator="agent",
                status="in-progress",
            )
        ),
    ]

    def token_in_view() -> dict[str, object] | None:
        cvm = api.cvm(cvm_id)
        return cvm if cvm["attestation_token"] else None

    def reported() -> list[dict[str, object]] | None:
        events = api.events(cvm_id)
        kinds = {event["kind"] for event in events}
        wanted = {"attestation_failed", "azure_token", "log", "event"}
        return events if wanted <= kinds else None

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=_job(cvm_id))
            await receive(call, "agentStateReq")
            for message in said:
                await call.write(message)
            cvm = await eventually(token_in_view, "the Azure token in GET /cvms/{id}")
            assert cvm["attestation_token"] == JWT
            # Refused evidence is not kept: only its digest and size, in the event.
            assert cvm["attestation"] == ""
            events = await eventually(reported, "the logs and events in GET .../events")
            by_kind = {event["kind"]: event for event in events}
            assert {
                key: by_kind["log"][key]
                for key in ("timestamp", "level", "message", "computation_id", "details")
            } == {
                "timestamp": "2030-01-02T03:04:05Z",
                "level": "warn",
                "message": "computation comp-1 started",
                "computation_id": "comp-1",
                "details": {},
            }
            assert {
                key: by_kind["event"][key]
                for key in ("timestamp", "message", "computation_id", "details")
            } == {
                "timestamp": "2030-01-02T03:04:06Z",
                "message": "algorithm-run",
                "computation_id": "comp-1",
                "details": {
                    "status": "in-progress",
                    "originator": "agent",
                    "details": '{"progress": 50}',
                },
            }
            # Not evidence at all: refused with the reason, no token of ours.
            assert by_kind["attestation_failed"]["level"] == "error"
            kept = by_kind["attestation_failed"]["details"]
            assert isinstance(kept, dict)
            assert kept["evidence_sha256"] == hashlib.sha256(REPORT).hexdigest()
            assert kept["evidence_bytes"] == len(REPORT)
            assert str(by_kind["attestation_failed"]["message"]).startswith("not an SEV-SNP")
            assert str(api.cvm(cvm_id)["attestation_error"]).startswith("not an SEV-SNP")
            assert by_kind["azure_token"]["message"] == "Azure attestation token validated"
            call.cancel()

    asyncio.run(scenario())
