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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository
from prism_backends.agents.limits import AgentLimits, Budget, EventBounds, cut
from prism_backends.agents.proto import cvms_pb2
from prism_backends.attestation.service import Appraiser
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
FLUSH_SECONDS = 0.5
MAX_BUFFERED_EVENTS = 100_000
# A reconnect costs this much of the CVM's byte budget (it writes a session
# and an event): an agent reconnecting in a loop is refused, not served.
CONNECT_COST = 4096
STORE_UNREACHABLE = "this replica cannot reach the store; reconnect"


@dataclass(eq=False)
class Connection:
    """One agent's open stream on this replica."""

    cvm_id: str
    serial: str  # of the client certificate it presented
    # None ends the stream without disconnectReq: the agent reconnects (see drop).
    outbox: asyncio.Queue[cvms_pb2.ServerStreamMessage | None] = field(
        default_factory=asyncio.Queue
    )
    last_state: str = ""
    closing: bool = False
    drop_reason: str = ""
    hung_up: bool = False  # the agent's side ended (see hang_up)
    opened: bool = False  # its session row was written (attach committed)

    def send(self, message: cvms_pb2.ServerStreamMessage) -> None:
        self.outbox.put_nowait(message)

    def disconnect(self, reason: str) -> None:
        """Tell the agent to go (its CVM was deleted, its certificate revoked or
        expired, or a newer stream took over)."""
        if not self.closing:
            self.closing = True
            self.send(cvms_pb2.ServerStreamMessage(disconnectReq=cvms_pb2.DisconnectReq(id=reason)))

    def drop(self, reason: str) -> None:
        """End the stream so that the agent reconnects, perhaps to another replica."""
        if not self.closing:
            self.closing = True
            self.drop_reason = reason
            self.outbox.put_nowait(None)

    def hang_up(self) -> None:
        """The agent's side of the stream ended: ours ends too, with nothing more sent."""
        self.closing = True
        self.hung_up = True
        self.outbox.put_nowait(None)


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
        limits: AgentLimits | None = None,
        bounds: EventBounds | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._appraiser = appraiser
        self.limits = limits or AgentLimits()
        self._bounds = bounds or EventBounds()
        self._clock = clock
        self._budgets: dict[str, Budget] = {}
        self._over_budget: set[str] = set()  # CVMs whose budget dropped something unreported
        self._store_reached = clock()  # when a heartbeat last reached the store
        self._gained: dict[str, list[int]] = {}  # cvm id -> [events, bytes] since its trim
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

    def _budget(self, cvm_id: str) -> Budget:
        budget = self._budgets.get(cvm_id)
        if budget is None:
            budget = self._budgets[cvm_id] = Budget(self.limits, self._clock())
        return budget

    def admit(self, cvm_id: str) -> bool:
        """May this CVM's agent open a stream now? False when it reconnects in a loop."""
        budget = self._budget(cvm_id)
        return self._granted(cvm_id, budget.allow_message(CONNECT_COST, self._clock()))

    def allow(self, cvm_id: str, size: int) -> bool:
        """May this CVM's agent send a message of ``size`` bytes now? What is
        refused is counted and reported as one event at the next flush. A
        message costs what is kept of it (its texts are cut), so one long log
        line is stored cut rather than refused outright."""
        kept = 2 * self.limits.message_max_bytes  # a text and details, each cut
        budget = self._budget(cvm_id)
        return self._granted(cvm_id, budget.allow_message(size, self._clock(), kept=kept))

    def _allow_evidence(self, cvm_id: str) -> bool:
        return self._granted(cvm_id, self._budget(cvm_id).allow_evidence(self._clock()))

    def _granted(self, cvm_id: str, granted: bool) -> bool:
        """A budget's answer; a refusal is reported at the next flush."""
        if not granted:
            self._over_budget.add(cvm_id)
        return granted

    async def attach(self, connection: Connection, confirm: Callable[[Session], None]) -> None:
        """Open the stream's session. ``confirm`` runs first in that transaction
        and raises to refuse the stream: a refusal writes nothing and leaves the
        stream this one would have replaced as it was."""
        cvm_id = connection.cvm_id
        previous = self._connections.get(cvm_id)
        # Registered before the transaction: a detach of the previous stream
        # meanwhile must leave the session row this one is writing alone.
        self._connections[cvm_id] = connection
        now = utcnow()

        def open_stream(session: Session) -> list[str]:
            confirm(session)
            # One transaction: the session opens if and only if a connect with
            # a renewed certificate retires the older ones.
            repository.open_session(session, cvm_id, self.replica, now, now + self._ttl)
            return repository.note_presented(session, cvm_id, connection.serial, now)

        try:
            retired = await self._db(open_stream)
        except BaseException:
            if self._connections.get(cvm_id) is connection:
                if previous is not None and not previous.closing:
                    self._connections[cvm_id] = previous
                else:
                    del self._connections[cvm_id]
            raise
        if previous is not None:
            previous.disconnect("replaced by a newer connection of the same agent")
        connection.opened = True
        self.record(
            connection.cvm_id,
            "connected",
            message="agent connected",
            details={"certificate_serial": connection.serial},
        )
        if retired:
            self.record(
                connection.cvm_id,
                "certificate",
                level="info",
                message=f"the agent connected with certificate {connection.serial}; "
                f"the older {', '.join(retired)} revoked",
                details={"serial": connection.serial, "revoked": retired},
            )
        connection.send(state_request())

    async def detach(self, connection: Connection) -> None:
        if self._connections.get(connection.cvm_id) is not connection:
            return  # a newer stream of the same agent owns the session now
        del self._connections[connection.cvm_id]
        self._answered.discard(connection.cvm_id)
        self.record(connection.cvm_id, "disconnected", message="agent disconnected")
        now = utcnow()
        # Shielded: gRPC cancels the handler when the agent hangs up, and the
        # session must be closed all the same. Without the store it expires.
        try:
            await asyncio.shield(
                self._db(
                    lambda s: repository.close_session(s, connection.cvm_id, self.replica, now)
                )
            )
        except StoreUnavailable:
            log.warning("agent %s: its session could not be closed; it expires", connection.cvm_id)

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
        message = cut(message, self.limits.message_max_bytes)
        details_json = json.dumps(details) if details else ""
        self._events.append(
            {
                "cvm_id": cvm_id,
                "kind": kind,
                "occurred_at": occurred_at or now,
                "received_at": now,
                "level": level[:16],
                "message": message,
                "computation_id": computation_id[:255],
                "details": details_json,
                "size": len(message.encode()) + len(details_json.encode()),
            }
        )

    async def evidence(self, connection: Connection, report: bytes) -> None:
        """Appraise evidence (signatures, binding to the certificate this stream
        presented, policy) and record the verdict, within the CVM's evidence budget."""
        if not self._allow_evidence(connection.cvm_id):
            return
        await asyncio.to_thread(
            self._appraiser.evidence, connection.cvm_id, report, serial=connection.serial
        )

    async def azure_token(self, cvm_id: str, token: bytes) -> None:
        """Validate an Azure Attestation token (within the evidence budget);
        kept only when it validates."""
        if not self._allow_evidence(cvm_id):
            return
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
            except StoreUnavailable:
                # Said by the store's own (throttled) outage line.
                log.debug("agents endpoint: %s waits for the store", step.__name__)
            except Exception:
                log.exception("agents endpoint: %s failed", getattr(step, "__name__", step))

    async def flush(self) -> None:
        """Write what agents said since the last flush, in one transaction,
        and trim the CVMs that gained enough to approach their bound."""
        self._report_dropped()
        answered, self._answered = sorted(self._answered), set()
        events, self._events = self._events, []
        if not answered and not events:
            return
        now = utcnow()
        gains = _gains(events)
        crowded = self._crowded(gains)

        def write(session: Session) -> None:
            repository.mark_answered(session, self.replica, answered, now)
            repository.add_events(session, events)
            for cvm_id in crowded:
                repository.trim_events(
                    session,
                    cvm_id,
                    keep=self._bounds.trim_count,
                    keep_bytes=self._bounds.trim_size,
                )

        try:
            await self._db(write)
        except Exception:
            # Keep them for the next flush (bounded: a long outage drops the oldest).
            self._answered.update(answered)
            self._events = (events + self._events)[-MAX_BUFFERED_EVENTS:]
            raise
        for cvm_id, (count, size) in gains.items():
            gained = self._gained.setdefault(cvm_id, [0, 0])
            gained[0] += count
            gained[1] += size
        for cvm_id in crowded:
            self._gained.pop(cvm_id, None)

    def _report_dropped(self) -> None:
        # Only the CVMs that went over since the last flush: this runs twice a
        # second, and a pass over every stream's budget would cost a core.
        over, self._over_budget = self._over_budget, set()
        for cvm_id in sorted(over):
            # Still there: a budget with drops to report is not idle, so not forgotten.
            dropped = self._budgets[cvm_id].take_dropped()
            if dropped is not None:
                self.record(
                    cvm_id, "rate_limited", level="warn", message=dropped.describe(self.limits)
                )

    def _crowded(self, gains: dict[str, tuple[int, int]]) -> list[str]:
        """CVMs that may reach a bound with these gains: trimmed in the same write."""
        crowded = []
        # Only this batch's CVMs: one that gained nothing was found short of its
        # bounds by an earlier flush (and _gained holds every CVM with events).
        for cvm_id, (count, size) in sorted(gains.items()):
            before = self._gained.get(cvm_id, [0, 0])
            if self._bounds.crowded(before[0] + count, before[1] + size):
                crowded.append(cvm_id)
        return crowded

    async def heartbeat(self) -> None:
        """Ask every agent for its state, keep our sessions alive, and send
        disconnectReq to the agents of CVMs deleted meanwhile and to those whose
        certificate was revoked or ran out.

        A replica that cannot reach the store for half its sessions' lifetime
        drops its streams, so that their agents reconnect, perhaps to a
        healthy replica, before their sessions expire and they turn offline."""
        self._forget_idle_budgets()
        # Streams still being attached have no session to renew yet (renewing
        # would open one beside the attach's own).
        serials = {cvm_id: c.serial for cvm_id, c in self._connections.items() if c.opened}
        cvm_ids = list(serials)
        if not cvm_ids:
            self._store_reached = self._clock()
            return
        now = utcnow()

        def renew(session: Session) -> tuple[repository.Renewal, dict[str, str]]:
            renewal = repository.renew_sessions(
                session, self.replica, cvm_ids, now, now + self._ttl
            )
            return renewal, repository.ended_streams(session, serials, now)

        try:
            renewal, ended = await self._db(renew)
        except StoreUnavailable:
            if self._clock() - self._store_reached > self._ttl.total_seconds() / 2:
                self._drop_all(STORE_UNREACHABLE)
            raise
        self._store_reached = self._clock()
        if renewal.reopened:
            log.info("agents endpoint: %d sessions opened again", len(renewal.reopened))
        for cvm_id in cvm_ids:
            connection = self._connections.get(cvm_id)
            if connection is None or connection.closing:
                continue
            if cvm_id in ended and connection.serial == serials[cvm_id]:
                connection.disconnect(ended[cvm_id])
            elif cvm_id in renewal.elsewhere:
                connection.drop("a newer stream of this agent is on another replica")
            else:
                connection.send(state_request())

    def _drop_all(self, reason: str) -> None:
        streams = [c for c in self._connections.values() if not c.closing]
        if streams:
            log.warning("agents endpoint: dropping %d streams: %s", len(streams), reason)
        for connection in streams:
            connection.drop(reason)

    def _forget_idle_budgets(self) -> None:
        now = self._clock()
        for cvm_id in [c for c, b in self._budgets.items() if b.idle(now)]:
            if cvm_id not in self._connections:
                del self._budgets[cvm_id]
                self._gained.pop(cvm_id, None)  # the hourly prune bounds it from here


def _gains(events: list[dict[str, object]]) -> dict[str, tuple[int, int]]:
    """Events and bytes per CVM in a batch."""
    gains: dict[str, tuple[int, int]] = {}
    for event in events:
        cvm_id = str(event["cvm_id"])
        count, size = gains.get(cvm_id, (0, 0))
        gains[cvm_id] = (count + 1, size + cast(int, event["size"]))
    return gains


def _token_text(token: bytes) -> str:
    """A JWT is ASCII and kept as is; anything else is kept as base64."""
    try:
        text = token.strip().decode("ascii")
    except UnicodeDecodeError:
        return base64.b64encode(token).decode()
    return text if text.isprintable() else base64.b64encode(token).decode()
