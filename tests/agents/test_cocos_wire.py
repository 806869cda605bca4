"""The agents endpoint speaks Cocos AI's wire format, checked against Cocos'
own interface rather than ours: tests/agents/cocos/cvms.proto is compiled at
test time with grpc_tools.protoc and a whole agent session is driven with the
resulting client, and messages are serialized by one side and parsed by the
other, byte for byte.

Both files declare the same symbols (``cvms.ClientStreamMessage``...), which
one descriptor pool cannot hold twice; the Cocos modules are therefore built
into a private pool, so that nothing of prism_backends' descriptors or
classes is shared with them.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import text_format, timestamp_pb2
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.message import Message

from prism_backends.agents.hub import Connection, state_request
from prism_backends.agents.proto import cvms_pb2
from prism_backends.runtime import Runtime
from tests.agents.conftest import (
    DEADLINE_SECONDS,
    Api,
    azure_token,
    channel_of,
    eventually,
    footprint,
    receive,
    serving,
)
from tests.protoc import compile_proto, import_privately

COCOS_PROTO = Path(__file__).parent / "cocos" / "cvms.proto"
GENERATED = ("cvms_pb2", "cvms_pb2_grpc")
REPORT = b"\x01\x02 SEV-SNP report \x00\xff" * 37
JWT = azure_token()
LOGGED_AT = datetime(2031, 5, 6, 7, 8, 9, 250000, tzinfo=UTC)


@dataclass(frozen=True)
class Cocos:
    """Cocos' generated modules (untyped: they exist only at run time)."""

    pb2: ModuleType
    pb2_grpc: ModuleType


def _import_privately(out: Path) -> Cocos:
    pb2, pb2_grpc = import_privately(out, GENERATED, [timestamp_pb2.DESCRIPTOR])
    assert pb2.ClientStreamMessage is not cvms_pb2.ClientStreamMessage
    return Cocos(pb2=pb2, pb2_grpc=pb2_grpc)


@pytest.fixture(scope="module")
def cocos(tmp_path_factory: pytest.TempPathFactory) -> Cocos:
    out = tmp_path_factory.mktemp("cocos-generated")
    compile_proto(COCOS_PROTO, out)
    return _import_privately(out)


# --- the definitions --------------------------------------------------------------------


def _shape(file: FileDescriptor) -> FileDescriptorProto:
    """What the wire depends on: messages (by name), their fields and oneofs,
    and the service; not the file's name, options or declaration order."""
    proto = FileDescriptorProto()
    file.CopyToProto(proto)
    proto.ClearField("name")
    proto.ClearField("options")
    messages = sorted(proto.message_type, key=lambda message: message.name)
    proto.ClearField("message_type")
    proto.message_type.extend(messages)
    return proto


def test_the_definitions_agree_field_for_field(cocos: Cocos) -> None:
    ours, theirs = _shape(cvms_pb2.DESCRIPTOR), _shape(cocos.pb2.DESCRIPTOR)
    assert ours.package == theirs.package == "cvms"
    assert [m.name for m in ours.message_type] == [m.name for m in theirs.message_type]
    for mine, cocos_message in zip(ours.message_type, theirs.message_type, strict=True):
        assert text_format.MessageToString(mine) == text_format.MessageToString(cocos_message)
    assert ours == theirs
    assert (
        cocos.pb2.DESCRIPTOR.services_by_name["Service"].methods_by_name["Process"].full_name
        == "cvms.Service.Process"
    )


# --- messages, both ways ------------------------------------------------------------------


def _cocos_messages(cocos: Cocos) -> list[Any]:
    """Messages as a Cocos agent and a Cocos manager build them."""
    pb = cocos.pb2
    log = pb.AgentLog(message="starting", computation_id="c-1", level="debug")
    log.timestamp.FromDatetime(LOGGED_AT)
    event = pb.AgentEvent(
        event_type="receiving-data",
        computation_id="c-1",
        details=b"\x00\x01{}",
        originator="agent",
        status="in-progress",
    )
    event.timestamp.FromDatetime(LOGGED_AT)
    source = pb.Source(
        type="oci-image", url="docker://x/y", kbs_resource_path="r/1", encrypted=True
    )
    kbs = pb.KBSConfig(url="https://kbs.example:8080", enabled=True)
    run = pb.ComputationRunReq(
        id="c-1",
        name="census",
        description="a computation",
        datasets=[
            pb.Dataset(
                hash=b"\x11" * 32,
                userKey=b"dataset-owner-key",
                filename="data.csv",
                source=source,
                decompress=True,
                kbs=kbs,
            ),
            pb.Dataset(hash=b"\x22" * 32, filename="more.csv"),
        ],
        algorithm=pb.Algorithm(
            hash=b"\x33" * 32,
            userKey=b"algorithm-owner-key",
            source=source,
            algo_type="python",
            algo_args=["--rounds", "3"],
            kbs=kbs,
        ),
        result_consumers=[pb.ResultConsumer(userKey=b"consumer-1"), pb.ResultConsumer()],
        agent_config=pb.AgentConfig(
            port="7002",
            cert_file="/c.pem",
            key_file="/k.pem",
            client_ca_file="/ca1.pem",
            server_ca_file="/ca2.pem",
            log_level="info",
            attested_tls=True,
        ),
    )
    client, server = pb.ClientStreamMessage, pb.ServerStreamMessage
    return [
        client(agent_log=log),
        client(agent_event=event),
        client(run_res=pb.RunResponse(computation_id="c-1", error="exit status 1")),
        client(stopComputationRes=pb.StopComputationResponse(computation_id="c-1", message="ok")),
        client(agentStateRes=pb.AgentStateRes(id="req-1", state="Running")),
        client(vTPMattestationReport=pb.AttestationResponse(file=REPORT, certSerialNumber="ab")),
        client(azureAttestationToken=pb.azureAttestationToken(file=JWT.encode())),
        server(runReqChunks=pb.RunReqChunks(data=b"\x08\x01chunk", id="c-1", is_last=True)),
        server(runReq=run),
        server(stopComputation=pb.StopComputation(computation_id="c-1")),
        server(agentStateReq=pb.AgentStateReq(id="req-1")),
        server(disconnectReq=pb.DisconnectReq(id="bye")),
    ]


def _ours_for(message: Any) -> type[Message]:
    found: type[Message] = getattr(cvms_pb2, type(message).DESCRIPTOR.name)
    return found


def test_cocos_messages_parse_identically_with_ours(cocos: Cocos) -> None:
    for theirs in _cocos_messages(cocos):
        wire = theirs.SerializeToString()
        assert wire, theirs
        mine = _ours_for(theirs).FromString(wire)
        # Same fields under the same names (anything we did not know would be
        # missing from the text form), and the same bytes back.
        assert text_format.MessageToString(mine) == text_format.MessageToString(theirs)
        assert mine.SerializeToString() == wire
        again = type(theirs).FromString(mine.SerializeToString())
        assert again == theirs


def test_what_the_endpoint_sends_parses_identically_with_cocos(cocos: Cocos) -> None:
    connection = Connection("cvm-1", "0a1b")
    connection.disconnect("the CVM was deleted")
    queued = connection.outbox.get_nowait()
    assert queued is not None  # a message, not the end of the stream
    sent = [state_request(), queued]
    stamp = cvms_pb2.AgentLog().timestamp
    stamp.FromDatetime(LOGGED_AT)
    sent.append(
        cvms_pb2.ServerStreamMessage(
            runReq=cvms_pb2.ComputationRunReq(
                id="c-1",
                datasets=[cvms_pb2.Dataset(hash=b"\x01" * 32, filename="d.csv")],
                algorithm=cvms_pb2.Algorithm(algo_args=["a", "b"]),
            )
        )
    )
    assert [message.WhichOneof("message") for message in sent[:2]] == [
        "agentStateReq",
        "disconnectReq",
    ]
    for mine in sent:
        wire = mine.SerializeToString()
        theirs = cocos.pb2.ServerStreamMessage.FromString(wire)
        assert theirs.WhichOneof("message") == mine.WhichOneof("message")
        assert text_format.MessageToString(theirs) == text_format.MessageToString(mine)
        assert theirs.SerializeToString() == wire
        assert cvms_pb2.ServerStreamMessage.FromString(theirs.SerializeToString()) == mine


# --- a whole session, with Cocos' client -------------------------------------------------


def test_a_cocos_agent_runs_a_whole_session(runtime: Runtime, api: Api, cocos: Cocos) -> None:
    cvm_id = api.create("cocos-agent")
    credential = api.credential(cvm_id)
    pb = cocos.pb2

    log = pb.AgentLog(message="computation c-1 started", computation_id="c-1", level="info")
    log.timestamp.FromDatetime(LOGGED_AT)
    event = pb.AgentEvent(
        event_type="algorithm-run",
        computation_id="c-1",
        details=b'{"attempt": 1}',
        originator="agent",
        status="completed",
    )
    event.timestamp.FromDatetime(LOGGED_AT)
    said = [
        pb.ClientStreamMessage(agent_log=log),
        pb.ClientStreamMessage(agent_event=event),
        pb.ClientStreamMessage(
            vTPMattestationReport=pb.AttestationResponse(file=REPORT, certSerialNumber="c0ffee")
        ),
        pb.ClientStreamMessage(
            azureAttestationToken=pb.azureAttestationToken(
                file=JWT.encode(), certSerialNumber="c0ffee"
            )
        ),
        pb.ClientStreamMessage(
            run_res=pb.RunResponse(computation_id="c-1", error="algorithm exited with 2")
        ),
    ]

    def effects() -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
        cvm = api.cvm(cvm_id)
        events = {event["kind"]: event for event in api.events(cvm_id)}
        wanted = {
            "connected",
            "state",
            "log",
            "event",
            "attestation_failed",
            "azure_token",
            "run_result",
        }
        if cvm["status"] != "running" or not cvm["attestation_token"]:
            return None
        return (cvm, events) if wanted <= set(events) else None

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            stub = cocos.pb2_grpc.ServiceStub(channel)
            call = stub.Process(metadata=(("job-id", cvm_id),))
            asked = await receive(call, "agentStateReq")
            assert isinstance(asked, pb.ServerStreamMessage)
            await call.write(
                pb.ClientStreamMessage(
                    agentStateRes=pb.AgentStateRes(id=asked.agentStateReq.id, state="Running")
                )
            )
            for message in said:
                await call.write(message)

            cvm, events = await eventually(effects, "the session's effects in the API")
            assert cvm["attestation"] == ""  # refused evidence is not kept
            assert cvm["attestation_token"] == JWT
            assert events["state"]["message"] == "Running"
            assert (events["log"]["message"], events["log"]["level"]) == (
                "computation c-1 started",
                "info",
            )
            assert events["log"]["timestamp"] == "2031-05-06T07:08:09Z"
            assert events["event"]["message"] == "algorithm-run"
            assert events["event"]["details"] == {
                "status": "completed",
                "originator": "agent",
                "details": '{"attempt": 1}',
            }
            assert events["attestation_failed"]["level"] == "error"  # not real evidence
            assert events["run_result"]["computation_id"] == "c-1"
            assert (events["run_result"]["level"], events["run_result"]["message"]) == (
                "error",
                "algorithm exited with 2",
            )

            # Deleting the CVM sends its agent away (at the next heartbeat).
            await asyncio.to_thread(api.delete, cvm_id)
            goodbye = await receive(call, "disconnectReq")
            assert isinstance(goodbye, pb.ServerStreamMessage)
            assert goodbye.disconnectReq.id
            assert await asyncio.wait_for(call.read(), DEADLINE_SECONDS) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            await endpoint.hub.flush()
            assert cvm_id not in endpoint.hub.connections

    asyncio.run(scenario())
    assert footprint(runtime, cvm_id).sessions == 0


def test_a_cocos_client_sending_eat_evidence_sees_the_verdict_on_the_cvm(
    runtime: Runtime, api: Api, cocos: Cocos
) -> None:
    import hashlib

    from tests.agents import test_attestation_e2e as e2e
    from tests.attestation import eat_wrap

    e2e._trust_test_roots(runtime)
    cvm_id = api.create("cocos-eat")
    e2e._set_policy(runtime, cvm_id, e2e._policy(e2e.MEASUREMENT))
    credential = api.credential(cvm_id)
    report = e2e._evidence(hashlib.sha512(credential.client_cert).digest())
    token = eat_wrap.cbor_eat(report, hashlib.sha256(credential.client_cert).digest())
    pb = cocos.pb2

    def verdict() -> dict[str, Any] | None:
        cvm = api.cvm(cvm_id)
        return cvm if cvm["attestation_token"] else None

    async def scenario() -> dict[str, Any]:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cocos.pb2_grpc.ServiceStub(channel).Process(metadata=(("job-id", cvm_id),))
            await receive(call, "agentStateReq")
            await call.write(
                pb.ClientStreamMessage(
                    vTPMattestationReport=pb.AttestationResponse(file=token, certSerialNumber="1")
                )
            )
            cvm = await eventually(verdict, "the EAT's verdict on the CVM")
            call.cancel()
            return cvm

    cvm = asyncio.run(scenario())
    assert cvm["attestation_error"] == ""
    assert base64.b64decode(cvm["attestation"]) == token
