"""The agents endpoint when its store is out of reach: it drops its streams
before their sessions expire (so agents reconnect, perhaps to a healthy
replica), and a session reaped meanwhile is opened again for a stream that
stayed, so that liveness converges."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from sqlalchemy import delete, select, update

from prism_backends.agents.models import AgentSession
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.cvms.models import CVM
from prism_backends.db.engine import unit_of_work
from prism_backends.errors import StoreUnavailable
from prism_backends.runtime import Runtime
from tests.agents.conftest import Api, channel_of, eventually, receive, serving


def _status(runtime: Runtime, cvm_id: str) -> str:
    with unit_of_work(runtime.sessions) as session:
        return str(session.scalar(select(CVM.status).where(CVM.id == cvm_id)))


def _answer(request: cvms_pb2.ServerStreamMessage) -> cvms_pb2.ClientStreamMessage:
    return cvms_pb2.ClientStreamMessage(
        agentStateRes=cvms_pb2.AgentStateRes(id=request.agentStateReq.id, state="Running")
    )


async def _read_until_it_ends(call: Any) -> None:
    while True:
        await receive(call, "agentStateReq")


def test_a_session_reaped_during_an_outage_is_opened_again(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("stays")
    credential = api.credential(cvm_id)

    async def scenario() -> None:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=(("job-id", cvm_id),))
            await call.write(_answer(await receive(call, "agentStateReq")))
            await eventually(lambda: _status(runtime, cvm_id) == "running", "running")
            # What the reaper does to a replica that stopped renewing: session gone, offline.
            with unit_of_work(runtime.sessions) as session:
                session.execute(delete(AgentSession).where(AgentSession.cvm_id == cvm_id))
                session.execute(update(CVM).where(CVM.id == cvm_id).values(status="offline"))
            await endpoint.hub.heartbeat()
            await call.write(_answer(await receive(call, "agentStateReq")))
            await eventually(lambda: _status(runtime, cvm_id) == "running", "running again")
            call.cancel()

    asyncio.run(scenario())


def test_a_replica_without_its_store_drops_its_streams(
    runtime: Runtime, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    cvm_id = api.create("moves")
    credential = api.credential(cvm_id)

    async def scenario() -> Any:
        async with serving(runtime) as endpoint, channel_of(endpoint.port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=(("job-id", cvm_id),))
            await receive(call, "agentStateReq")
            hub = endpoint.hub

            async def unreachable(_work: object) -> None:
                raise StoreUnavailable("the store is unavailable; try again shortly")

            monkeypatch.setattr(hub, "_db", unreachable)
            with pytest.raises(StoreUnavailable):
                await hub.heartbeat()  # the first failure: the sessions still stand
            assert not hub.connections[cvm_id].closing
            monkeypatch.setattr(hub, "_store_reached", hub._store_reached - 60)
            with pytest.raises(StoreUnavailable):
                await hub.heartbeat()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await _read_until_it_ends(call)
            monkeypatch.undo()
            return ended.value

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach the store; reconnect" in (error.details() or "")
