"""The agents' gRPC endpoint: Cocos' ``cvms.Service/Process`` over mutual TLS.

An agent is identified by the client certificate this service issued to its
CVM (subject CN = CVM id); ``job-id`` metadata, when sent, must name the same
CVM. Revoked certificates and deleted CVMs are refused before anything is
recorded. A CVM may hold several valid certificates (a renewal the agent has
not picked up yet); the first connect with a newer one revokes the older ones.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository
from prism_backends.agents.hub import STORE_UNREACHABLE, Connection, Hub
from prism_backends.agents.limits import AgentLimits, EventBounds, cut
from prism_backends.agents.pki import AgentCA, load_or_create_server_credentials
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.attestation.service import Appraiser
from prism_backends.config import Settings
from prism_backends.errors import StoreUnavailable

log = logging.getLogger(__name__)


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claim:
    """What a client certificate says, before the store has confirmed it."""

    cvm_id: str  # its subject CN
    serial: str  # the stream ends when it is revoked
    not_after: datetime
    job_id: str | None  # the job-id metadata, when sent


def replica_identity() -> str:
    return f"agents:{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def claim_of(pem: bytes | None, job_id: str | None) -> Claim:
    if not pem:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Claim(
        cvm_id=str(names[0].value) if names else "",
        serial=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc,
        job_id=job_id,
    )


def confirm(claim: Claim, session: Session) -> None:
    """Refused unless the store knows the certificate as its CVM's, standing."""
    found = repository.presented(session, claim.serial)
    if found is None or found.cvm_id != claim.cvm_id:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "this certificate was not issued to a CVM")
    if found.revoked or found.deleted:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "this certificate has been revoked")
    if claim.not_after < datetime.now(UTC):
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "this certificate has expired")
    if claim.job_id is not None and claim.job_id != found.cvm_id:
        raise Refused(grpc.StatusCode.PERMISSION_DENIED, "the job-id metadata names another CVM")


class AgentService(cvms_pb2_grpc.ServiceServicer):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def Process(  # noqa: N802 - the name is the protocol's
        self,
        request_iterator: AsyncIterator[cvms_pb2.ClientStreamMessage],
        context: grpc.aio.ServicerContext[
            cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage
        ],
    ) -> AsyncIterator[cvms_pb2.ServerStreamMessage]:
        try:
            claim = self._claim(context)
            if not self._hub.admit(claim.cvm_id):
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "this agent reconnects too often; wait a few seconds",
                )
            connection = Connection(claim.cvm_id, claim.serial)
            # The certificate is confirmed in the transaction that opens the session.
            await self._hub.attach(connection, functools.partial(confirm, claim))
        except Refused as refused:
            log.info("agent refused: %s", refused.reason)
            await context.abort(refused.code, refused.reason)
            raise  # abort raises; this keeps the type checker informed
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, STORE_UNREACHABLE)
            raise  # abort raises; this keeps the type checker informed
        reader = asyncio.create_task(self._read(connection, request_iterator))
        # The agent's side ending (it hung up, or its stream failed) ends ours:
        # the one await below then wakes for that as for anything to send.
        reader.add_done_callback(functools.partial(_reads_ended, connection))
        try:
            while True:
                message = await connection.outbox.get()
                if message is None:
                    if connection.hung_up:
                        return
                    # Dropped: the agent is to reconnect.
                    await context.abort(grpc.StatusCode.UNAVAILABLE, connection.drop_reason)
                    return
                yield message
                if message.HasField("disconnectReq"):
                    return
        finally:
            reader.cancel()
            await self._hub.detach(connection)

    def _claim(
        self,
        context: grpc.aio.ServicerContext[
            cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage
        ],
    ) -> Claim:
        certificates = list(context.auth_context().get("x509_pem_cert", []))
        pem = certificates[0] if certificates else None
        job_ids = [value for key, value in context.invocation_metadata() or () if key == "job-id"]
        return claim_of(pem, str(job_ids[0]) if job_ids else None)

    async def _read(
        self, connection: Connection, messages: AsyncIterator[cvms_pb2.ClientStreamMessage]
    ) -> None:
        async for message in messages:
            try:
                await self._handle(connection, message)
            except Exception:
                log.exception("agent %s: message not handled", connection.cvm_id)

    async def _handle(self, connection: Connection, message: cvms_pb2.ClientStreamMessage) -> None:
        hub, cvm_id = self._hub, connection.cvm_id
        kind = message.WhichOneof("message")
        if kind == "agentStateRes":
            # Not rate-limited: it is what liveness rests on, and it is tiny.
            hub.answered(connection, message.agentStateRes.state[:64])
            return
        if kind == "vTPMattestationReport":
            await hub.evidence(connection, message.vTPMattestationReport.file)
            return
        if kind == "azureAttestationToken":
            await hub.azure_token(cvm_id, message.azureAttestationToken.file)
            return
        if not hub.allow(cvm_id, message.ByteSize()):
            return
        if kind == "agent_log":
            entry = message.agent_log
            hub.record(
                cvm_id,
                "log",
                occurred_at=_when(entry),
                level=entry.level,
                message=entry.message,
                computation_id=entry.computation_id,
            )
        elif kind == "agent_event":
            event = message.agent_event
            hub.record(
                cvm_id,
                "event",
                occurred_at=_when(event),
                message=event.event_type[:255],
                computation_id=event.computation_id,
                details={
                    "status": event.status[:255],
                    "originator": event.originator[:255],
                    "details": cut(
                        event.details.decode("utf-8", "replace"), hub.limits.message_max_bytes
                    ),
                },
            )
        elif kind == "run_res":
            result = message.run_res
            hub.record(
                cvm_id,
                "run_result",
                computation_id=result.computation_id,
                level="error" if result.error else "info",
                message=result.error,
            )
        elif kind == "stopComputationRes":
            stopped = message.stopComputationRes
            hub.record(
                cvm_id,
                "stop_result",
                computation_id=stopped.computation_id,
                message=stopped.message,
            )


def _reads_ended(connection: Connection, reader: asyncio.Task[None]) -> None:
    if not reader.cancelled() and (error := reader.exception()) is not None:
        log.debug("agent %s: its stream ended: %r", connection.cvm_id, error)
    connection.hang_up()


def _when(message: cvms_pb2.AgentLog | cvms_pb2.AgentEvent) -> datetime | None:
    if not message.HasField("timestamp"):
        return None
    return message.timestamp.ToDatetime(tzinfo=UTC)


GRPC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def server_options(*, share_port: bool) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # gRPC shares ports by default: a second endpoint with another CA
        # would take half the handshakes. Exclusive unless asked for.
        ("grpc.so_reuseport", 1 if share_port else 0),
        # gRPC's own default, said out loud: a larger message ends the
        # stream; evidence_max_bytes refuses (and records) smaller excess.
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
    ]


class PortInUse(OSError):
    """The agents port cannot be bound."""


class AgentsEndpoint:
    """The gRPC server and its hub, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        ca: AgentCA,
        appraiser: Appraiser,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._ca = ca
        self.hub = Hub(
            sessions,
            replica=replica_identity(),
            heartbeat_seconds=settings.heartbeat_seconds,
            session_ttl_seconds=max(3 * settings.heartbeat_seconds, settings.offline_after_seconds),
            appraiser=appraiser,
            limits=AgentLimits(
                message_max_bytes=settings.agent_message_max_bytes,
                bytes_per_second=settings.agent_bytes_per_second,
                evidence_per_minute=settings.evidence_per_minute,
            ),
            bounds=EventBounds(settings.events_per_cvm, settings.events_bytes_per_cvm),
        )
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        settings = self._settings
        chain, key = load_or_create_server_credentials(
            settings.data_dir, self._ca, settings.effective_agents_server_names
        )
        credentials = grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=self._ca.cert_pem, require_client_auth=True
        )
        server = grpc.aio.server(options=server_options(share_port=settings.agents_share_port))
        cvms_pb2_grpc.add_ServiceServicer_to_server(AgentService(self.hub), server)
        address = f"{settings.agents_host}:{settings.agents_port}"
        try:
            self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise PortInUse(
                f"the agents endpoint cannot listen on {address}: it is in use (another "
                "agents or serve process?) or not an address of this host"
            ) from exc
        await server.start()
        self._server = server
        self.hub.start()
        log.info("agents endpoint on %s:%d (mTLS)", settings.agents_host, self.port)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        # No disconnectReq here: that tells an agent to exit, and it should
        # rather reconnect when this endpoint (or another replica) is back.
        if self._server is not None:
            await self._server.stop(grace)
        await self.hub.stop()
