"""The agents endpoint's bookkeeping: the open streams of this replica, and the
batched writes that turn what agents say into liveness, events and evidence.

Liveness lives in the database, not here: each replica renews the session rows
of its own streams; rows of a replica that crashed expire, and whichever
process reaps them marks those CVMs offline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository
from prism_backends.agents.proto import cvms_pb2
from prism_backends.attestation.service import Appraiser
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work

log = logging.getLogger(__name__)

T = TypeVar("T")
FLUSH_SECONDS = 0.5
MAX_BUFFERED_EVENTS = 100_000


@dataclass(eq=False)
class Connection:
    """One agent's open stream on this replica."""

    cvm_id: str
    outbox: asyncio.Queue[cvms_pb2.ServerStreamMessage] = field(default_factory=asyncio.Queue)
    last_state: str = ""
    closing: bool = False

    def send(self, message: cvms_pb2.ServerStreamMessage) -> None:
        self.outbox.put_nowait(message)

    def disconnect(self, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.send(cvms_pb2.ServerStreamMessage(disconnectReq=cvms_pb2.DisconnectReq(id=reason)))


def state_request() -> cvms_pb2.ServerStreamMessage:
    return cvms_pb2.ServerStreamMessage(agentStateReq=cvms_pb2.AgentStateReq(id=uuid.uuid4().hex))


class Hub:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        replica: str,
        heartbeat_seconds: float,
        session_ttl_seconds: float,
        appraiser: Appraiser,
    ) -> None:
        self._sessions = sessions
        self._appraiser = appraiser
        self.replica = replica
        self._heartbeat = heartbeat_seconds
        self._ttl = timedelta(seconds=session_ttl_seconds)
        self._connections: dict[str, Connection] = {}
        self._answered: set[str] = set()
        self._events: list[dict[str, object]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connections(self) -> dict[str, Connection]:
        return self._connections

    async def _db(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with unit_of_work(self._sessions) as session:
                return work(session)

        return await asyncio.to_thread(run)

    # --- streams ---------------------------------------------------------------

    async def attach(self, connection: Connection) -> None:
        previous = self._connections.get(connection.cvm_id)
        if previous is not None:
            previous.disconnect("replaced by a newer connection of the same agent")
        self._connections[connection.cvm_id] = connection
        now = utcnow()
        await self._db(
            lambda s: repository.open_session(
                s, connection.cvm_id, self.replica, now, now + self._ttl
            )
        )
        self.record(connection.cvm_id, "connected", message="agent connected")
        connection.send(state_request())

    async def detach(self, connection: Connection) -> None:
        if self._connections.get(connection.cvm_id) is not connection:
            return  # a newer stream of the same agent owns the session now
        del self._connections[connection.cvm_id]
        self._answered.discard(connection.cvm_id)
        self.record(connection.cvm_id, "disconnected", message="agent disconnected")
        now = utcnow()
        # Shielded: gRPC cancels the handler when the agent hangs up, and the
        # session must be closed all the same.
        await asyncio.shield(
            self._db(lambda s: repository.close_session(s, connection.cvm_id, self.replica, now))
        )

    # --- what agents say ---------------------------------------------------------

    def answered(self, connection: Connection, state: str) -> None:
        self._answered.add(connection.cvm_id)
        if state != connection.last_state:
            connection.last_state = state
            self.record(connection.cvm_id, "state", message=state)

    def record(
        self,
        cvm_id: str,
        kind: str,
        *,
        occurred_at: datetime | None = None,
        level: str = "",
        message: str = "",
        computation_id: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        now = utcnow()
        self._events.append(
            {
                "cvm_id": cvm_id,
                "kind": kind,
                "occurred_at": occurred_at or now,
                "received_at": now,
                "level": level[:16],
                "message": message,
                "computation_id": computation_id[:255],
                "details": json.dumps(details) if details else "",
            }
        )

    async def evidence(self, cvm_id: str, report: bytes) -> None:
        """Appraise evidence (signatures, binding, policy) and record the verdict."""
        await asyncio.to_thread(self._appraiser.evidence, cvm_id, report)

    async def azure_token(self, cvm_id: str, token: bytes) -> None:
        """Validate an Azure Attestation token; kept only when it validates."""
        await asyncio.to_thread(self._appraiser.azure_token, cvm_id, _token_text(token))

    # --- the loops -----------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(FLUSH_SECONDS, self.flush), name="agents-flush"),
            asyncio.create_task(self._every(self._heartbeat, self.heartbeat), name="agents-beat"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()

    async def _every(self, seconds: float, step: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except Exception:
                log.exception("agents endpoint: %s failed", getattr(step, "__name__", step))

    async def flush(self) -> None:
        """Write what agents said since the last flush, in one transaction."""
        answered, self._answered = sorted(self._answered), set()
        events, self._events = self._events, []
        if not answered and not events:
            return
        now = utcnow()

        def write(session: Session) -> None:
            repository.mark_answered(session, self.replica, answered, now)
            repository.add_events(session, events)

        try:
            await self._db(write)
        except Exception:
            # Keep them for the next flush (bounded: a long outage drops the oldest).
            self._answered.update(answered)
            self._events = (events + self._events)[-MAX_BUFFERED_EVENTS:]
            raise

    async def heartbeat(self) -> None:
        """Ask every agent for its state, keep our sessions alive, and send
        disconnectReq to the agents of CVMs deleted meanwhile."""
        cvm_ids = list(self._connections)
        if not cvm_ids:
            return
        expires = utcnow() + self._ttl

        def renew(session: Session) -> set[str]:
            repository.renew_sessions(session, self.replica, cvm_ids, expires)
            return repository.deleted_among(session, cvm_ids)

        deleted = await self._db(renew)
        for cvm_id in cvm_ids:
            connection = self._connections.get(cvm_id)
            if connection is None or connection.closing:
                continue
            if cvm_id in deleted:
                connection.disconnect("the CVM was deleted")
            else:
                connection.send(state_request())


def _token_text(token: bytes) -> str:
    """A JWT is ASCII and kept as is; anything else is kept as base64."""
    try:
        text = token.strip().decode("ascii")
    except UnicodeDecodeError:
        return base64.b64encode(token).decode()
    return text if text.isprintable() else base64.b64encode(token).decode()
