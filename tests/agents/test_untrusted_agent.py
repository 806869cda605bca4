"""An agent is untrusted input (for ``external`` the tenant holds its key):
what it sends is cut, rate-limited and bounded per CVM, so no agent can make
the store grow without bound or the appraiser spin.

The limits here are small so that a few messages reach them; the real
endpoint enforces them, and the store is read directly to see what was kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from prism_backends.agents.models import AgentEvent
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.config import Settings
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from tests.agents.conftest import (
    HEARTBEAT_SECONDS,
    Api,
    channel_of,
    eventually,
    free_port,
    receive,
    serving,
)

MESSAGE_CAP = 1024
RATE = 4096  # bytes a second; a burst of 16 s: 64 KiB
EVENTS_KEPT = 50
BYTES_KEPT = 65536
EVIDENCE_CAP = 8192


@pytest.fixture
def runtime(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(
        make_settings(
            agents_host="127.0.0.1",
            agents_port=free_port(),
            heartbeat_seconds=HEARTBEAT_SECONDS,
            attestation_fetch=False,
            agent_message_max_bytes=MESSAGE_CAP,
            agent_bytes_per_second=RATE,
            events_per_cvm=EVENTS_KEPT,
            events_bytes_per_cvm=BYTES_KEPT,
            evidence_max_bytes=EVIDENCE_CAP,
            evidence_per_minute=1,
        )
    )
    yield rt
    rt.close()


def _log(text: str) -> cvms_pb2.ClientStreamMessage:
    return cvms_pb2.ClientStreamMessage(agent_log=cvms_pb2.AgentLog(message=text, level="info"))


def _kept(runtime: Runtime, cvm_id: str) -> tuple[int, int, int]:
    """Events kept for the CVM: how many, their bytes, and the longest message."""
    with unit_of_work(runtime.sessions) as session:
        row = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(AgentEvent.size), 0),
                func.coalesce(func.max(func.length(AgentEvent.message)), 0),
            ).where(AgentEvent.cvm_id == cvm_id)
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def _session(
    runtime: Runtime,
    api: Api,
    cvm_id: str,
    said: list[cvms_pb2.ClientStreamMessage],
    done: Callable[[], Any],
    what: str,
) -> Any:
    credential = api.credential(cvm_id)

    async def scenario() -> Any:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=(("job-id", cvm_id),))
            await receive(call, "agentStateReq")
            for message in said:
                await call.write(message)
            found = await eventually(done, what)
            call.cancel()
            return found

    return asyncio.run(scenario())


def test_a_flood_of_huge_log_lines_is_cut_dropped_and_reported(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("flood")

    def reported() -> dict[str, Any] | None:
        events = {event["kind"]: event for event in api.events(cvm_id)}
        return events.get("rate_limited")

    flood = [_log(f"{index:03d}" + "x" * (1 << 20)) for index in range(100)]
    limited = _session(runtime, api, cvm_id, flood, reported, "a rate_limited event")
    assert limited["level"] == "warn"
    assert limited["message"].startswith("dropped ")
    assert f"over the rate of {RATE} bytes per second" in limited["message"]

    count, size, longest = _kept(runtime, cvm_id)
    # 100 MiB sent; what is kept is cut and bounded, by count and by bytes.
    assert longest <= MESSAGE_CAP
    assert count <= EVENTS_KEPT and size <= BYTES_KEPT
    logs = [event for event in api.events(cvm_id) if event["kind"] == "log"]
    assert logs and all(
        event["message"].endswith(f"[cut: {(1 << 20) + 3} bytes]") for event in logs
    )
    page = api.client.get(
        f"/backends/dom-1/cvms/{cvm_id}/events", params={"limit": "100"}, headers=api.headers
    )
    assert len(page.content) < 4 * BYTES_KEPT


def test_each_cvm_keeps_only_its_newest_events(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("chatty")
    lines = [_log(f"line {index}") for index in range(120)]  # within the rate: 120 of 256 B

    def newest_kept() -> list[dict[str, Any]] | None:
        logs = [event for event in api.events(cvm_id) if event["kind"] == "log"]
        return logs if logs and logs[0]["message"] == "line 119" else None

    _session(runtime, api, cvm_id, lines, newest_kept, "the last line")

    count, size, _ = _kept(runtime, cvm_id)
    assert count <= EVENTS_KEPT and size <= BYTES_KEPT
    messages = [event["message"] for event in api.events(cvm_id) if event["kind"] == "log"]
    assert "line 0" not in messages  # the oldest went first
    assert messages[: EVENTS_KEPT // 2] == [
        f"line {n}" for n in range(119, 119 - EVENTS_KEPT // 2, -1)
    ]


def test_oversized_evidence_is_refused_and_only_its_digest_kept(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("big-evidence")
    evidence = b"\x02" * (EVIDENCE_CAP + 1808)
    said = [
        cvms_pb2.ClientStreamMessage(
            vTPMattestationReport=cvms_pb2.AttestationResponse(file=evidence)
        ),
        # Over the evidence rate (one a minute): not appraised at all.
        cvms_pb2.ClientStreamMessage(
            vTPMattestationReport=cvms_pb2.AttestationResponse(file=b"\x03" * 100)
        ),
    ]

    def both_seen() -> dict[str, dict[str, Any]] | None:
        events = {event["kind"]: event for event in api.events(cvm_id)}
        return events if {"attestation_failed", "rate_limited"} <= set(events) else None

    events = _session(runtime, api, cvm_id, said, both_seen, "the refusal and the drop")
    refusal = events["attestation_failed"]
    assert refusal["message"].startswith(f"the evidence is {len(evidence)} bytes, more than")
    assert refusal["details"]["evidence_sha256"] == hashlib.sha256(evidence).hexdigest()
    assert refusal["details"]["evidence_bytes"] == len(evidence)
    assert "1 evidence over the rate of 1 a minute" in events["rate_limited"]["message"]
    assert sum(event["kind"] == "attestation_failed" for event in api.events(cvm_id)) == 1
    cvm = api.cvm(cvm_id)
    assert cvm["attestation"] == "" and cvm["attestation_token"] == ""
    assert cvm["attestation_error"] == refusal["message"]
    assert len(json.dumps(cvm)) < 4096


def test_an_agent_reconnecting_in_a_loop_is_refused(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("reconnects")
    credential = api.credential(cvm_id)

    async def scenario() -> list[grpc.StatusCode | None]:
        outcomes: list[grpc.StatusCode | None] = []
        async with serving(runtime) as endpoint:
            for _ in range(24):
                async with channel_of(endpoint.port, credential) as channel:
                    call = cvms_pb2_grpc.ServiceStub(channel).Process(
                        metadata=(("job-id", cvm_id),)
                    )
                    try:
                        await receive(call, "agentStateReq")
                        outcomes.append(None)
                    except grpc.aio.AioRpcError as error:
                        outcomes.append(error.code())
                    call.cancel()
        return outcomes

    outcomes = asyncio.run(scenario())
    # The budget holds sixteen connects (4 KiB each of 64 KiB), then refuses.
    assert outcomes[:16] == [None] * 16
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in outcomes[16:]
