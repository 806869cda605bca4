"""The agent's connection loop: dial in, answer heartbeats, send evidence, and
come back with backoff whenever the service goes away."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from prism_backends.agent import evidence
from prism_backends.agent.config import AgentSettings
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc

log = logging.getLogger(__name__)

AGENT_STATE = "ready"
MAX_QUEUED = 1000
BACKOFF_FIRST, BACKOFF_CAP = 1.0, 30.0


class Refused(Exception):
    """The service refused this agent's identity: retrying cannot help."""


@dataclass
class Outcome:
    disconnected: bool = False  # the service sent disconnectReq


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        self._pending: collections.deque[cvms_pb2.ClientStreamMessage] = collections.deque(
            maxlen=MAX_QUEUED
        )
        self._rng = random.Random()  # noqa: S311 - jitter, not security

    def queue(self, message: cvms_pb2.ClientStreamMessage) -> None:
        """Send at the next chance; kept across reconnects (the oldest go past MAX_QUEUED)."""
        self._pending.append(message)

    async def run(self) -> int:
        """0 after disconnectReq; 3 when the service refuses this agent."""
        self.queue(_log("info", "agent started"))
        found = self._evidence()
        if found is not None:
            self.queue(found)
        backoff = BACKOFF_FIRST
        while True:
            try:
                outcome = await self._session()
            except Refused as refused:
                log.error("the service refused this agent: %s", refused)
                return 3
            except grpc.aio.AioRpcError as error:
                log.warning("connection lost: %s %s", error.code().name, error.details())
                outcome = Outcome()
            if outcome.disconnected:
                log.info("the service asked this agent to disconnect; exiting")
                return 0
            delay = self._rng.uniform(backoff / 2, backoff)
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_CAP)
            if found is not None:
                self.queue(found)  # evidence on every reconnect, as Cocos' agent does

    def _evidence(self) -> cvms_pb2.ClientStreamMessage | None:
        try:
            got = evidence.gather(self._settings.client_cert.encode())
        except OSError as error:
            log.warning("no attestation evidence: %s", error)
            return None
        if got is None:
            log.info("no TEE interface on this machine: no attestation evidence is sent")
            return None
        log.info("attestation evidence from %s (%d bytes)", got.source, len(got.report))
        return cvms_pb2.ClientStreamMessage(
            vTPMattestationReport=cvms_pb2.AttestationResponse(file=got.report)
        )

    async def _session(self) -> Outcome:
        settings = self._settings
        credentials = grpc.ssl_channel_credentials(
            root_certificates=settings.ca_cert.encode(),
            private_key=settings.client_key.encode(),
            certificate_chain=settings.client_cert.encode(),
        )
        options = [("grpc.ssl_target_name_override", settings.server_name)]
        async with grpc.aio.secure_channel(
            settings.agents_address, credentials, options=options
        ) as channel:
            stub = cvms_pb2_grpc.ServiceStub(channel)
            call = stub.Process(metadata=(("job-id", settings.cvm_id),))
            outbox: asyncio.Queue[cvms_pb2.ClientStreamMessage] = asyncio.Queue()
            writer = asyncio.create_task(self._write(call, outbox))
            try:
                return await self._read(call, outbox)
            except grpc.aio.AioRpcError as error:
                if error.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    raise Refused(error.details() or error.code().name) from None
                raise
            finally:
                writer.cancel()

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage],
        outbox: asyncio.Queue[cvms_pb2.ClientStreamMessage],
    ) -> Outcome:
        async for message in call:
            kind = message.WhichOneof("message")
            if kind == "agentStateReq":
                while self._pending:
                    outbox.put_nowait(self._pending.popleft())
                outbox.put_nowait(
                    cvms_pb2.ClientStreamMessage(
                        agentStateRes=cvms_pb2.AgentStateRes(
                            id=message.agentStateReq.id, state=AGENT_STATE
                        )
                    )
                )
            elif kind == "disconnectReq":
                return Outcome(disconnected=True)
            elif kind in ("runReq", "runReqChunks"):
                computation = message.runReq.id if kind == "runReq" else message.runReqChunks.id
                outbox.put_nowait(
                    cvms_pb2.ClientStreamMessage(
                        run_res=cvms_pb2.RunResponse(
                            computation_id=computation,
                            error="the reference agent does not run computations",
                        )
                    )
                )
            elif kind == "stopComputation":
                outbox.put_nowait(
                    cvms_pb2.ClientStreamMessage(
                        stopComputationRes=cvms_pb2.StopComputationResponse(
                            computation_id=message.stopComputation.computation_id,
                            message="no computation is running",
                        )
                    )
                )
        return Outcome()

    async def _write(
        self,
        call: grpc.aio.StreamStreamCall[cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage],
        outbox: asyncio.Queue[cvms_pb2.ClientStreamMessage],
    ) -> None:
        while True:
            message = await outbox.get()
            try:
                await call.write(message)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # Not delivered: keep it for the next connection (heartbeat
                # answers are stale by then and are dropped).
                if message.WhichOneof("message") != "agentStateRes":
                    self._pending.appendleft(message)
                return


def _log(level: str, text: str) -> cvms_pb2.ClientStreamMessage:
    now = Timestamp()
    now.GetCurrentTime()
    return cvms_pb2.ClientStreamMessage(
        agent_log=cvms_pb2.AgentLog(message=text, level=level, timestamp=now)
    )
