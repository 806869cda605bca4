"""The agent's connection loop: dial in, answer heartbeats, send evidence, and
come back with backoff whenever the service goes away.

Given a way to read its configuration again (``reload``), the agent picks up a
renewed certificate without a restart: it reads the configuration at every
heartbeat and before every reconnect, and when the file holds another client
certificate it reconnects with that one at once (the service then revokes the
old one). A refusal or a disconnectReq ends the agent only if the
configuration holds nothing newer than what was refused."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from prism_backends.agent import evidence
from prism_backends.agent.config import AgentConfigError, AgentSettings
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
    renewed: bool = False  # the configuration now holds another certificate


class Agent:
    def __init__(
        self, settings: AgentSettings, reload: Callable[[], AgentSettings] | None = None
    ) -> None:
        self._settings = settings
        self._reload = reload
        self._reload_problem = ""
        self._found: cvms_pb2.ClientStreamMessage | None = None
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
        self._found = self._evidence()
        if self._found is not None:
            self.queue(self._found)
        backoff = BACKOFF_FIRST
        while True:
            try:
                outcome = await self._session()
            except Refused as refused:
                if self._renewed():
                    log.warning("refused (%s); trying the new certificate", refused)
                    continue
                log.error("the service refused this agent: %s", refused)
                return 3
            except grpc.aio.AioRpcError as error:
                log.warning("connection lost: %s %s", error.code().name, error.details())
                outcome = Outcome(renewed=self._renewed())
            if outcome.disconnected and not self._renewed():
                log.info("the service asked this agent to disconnect; exiting")
                return 0
            if outcome.renewed or outcome.disconnected:
                log.info("reconnecting with the new certificate")
                backoff = BACKOFF_FIRST
                continue
            delay = self._rng.uniform(backoff / 2, backoff)
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_CAP)
            if self._found is not None:
                self.queue(self._found)  # evidence on every reconnect, as Cocos' agent does

    def _renewed(self) -> bool:
        """Read the configuration again; True when it holds another client
        certificate for this CVM (which then replaces the current settings)."""
        if self._reload is None:
            return False
        try:
            fresh = self._reload()
        except AgentConfigError as error:
            if str(error) != self._reload_problem:  # said once, not every heartbeat
                self._reload_problem = str(error)
                log.warning("the configuration could not be read again: %s", error)
            return False
        self._reload_problem = ""
        if fresh.cvm_id != self._settings.cvm_id:
            log.warning("the configuration now names CVM %s; ignored", fresh.cvm_id)
            return False
        changed = fresh.client_cert != self._settings.client_cert
        self._settings = fresh
        if changed:
            log.info("the configuration holds a new client certificate")
            # Evidence is bound to the certificate: the old evidence would be refused.
            self._pending = collections.deque(
                (m for m in self._pending if not m.HasField("vTPMattestationReport")),
                maxlen=MAX_QUEUED,
            )
            self._found = self._evidence()
            if self._found is not None:
                self.queue(self._found)
        return changed

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
                if self._renewed():
                    return Outcome(renewed=True)
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
