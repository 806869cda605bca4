"""What one agent may send, and how much of it is kept.

For an ``external`` CVM the tenant holds the agent's key, so everything an
agent says is untrusted input: each text is cut to a size, and each CVM has
two budgets (token buckets) on this replica, one for bytes and one for
evidence, since appraising evidence costs far more than storing a log line.
Budgets are per CVM, not per stream: reconnecting does not refill them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prism_backends.buckets import TokenBucket

# A message costs at least this much of the byte budget: a flood of empty
# messages still costs rows and round trips.
MIN_MESSAGE_COST = 256
# The budget holds this many seconds of the sustained rate: a burst (an agent
# replaying its logs after a reconnect) passes, a flood does not.
BURST_SECONDS = 16
CUT_MARK = "… [cut: {size} bytes]"


@dataclass(frozen=True)
class AgentLimits:
    """The caps; see the ``agent_*`` and ``evidence_per_minute`` settings (the
    evidence size cap is the Appraiser's: ``evidence_max_bytes``)."""

    message_max_bytes: int = 8192
    bytes_per_second: int = 16384
    evidence_per_minute: int = 4


@dataclass(frozen=True)
class EventBounds:
    """How many events, and how many bytes of them, each CVM keeps at most.
    Reaching either drops the oldest quarter (as a log rotates), so the
    bound holds between trims without a trim on every write."""

    count: int = 10_000
    size: int = 8 * 1024 * 1024

    @property
    def trim_count(self) -> int:
        return self.count - self.count // 4

    @property
    def trim_size(self) -> int:
        return self.size - self.size // 4

    def crowded(self, gained_count: int, gained_size: int) -> bool:
        """Having gained this much since its last trim, a CVM may reach a bound."""
        return gained_count >= self.count // 4 or gained_size >= self.size // 4


@dataclass
class Dropped:
    """What a CVM's agent sent over its budget since this was last reported."""

    messages: int = 0
    size: int = 0
    evidence: int = 0

    def __bool__(self) -> bool:
        return bool(self.messages or self.evidence)

    def describe(self, limits: AgentLimits) -> str:
        parts = []
        if self.messages:
            parts.append(
                f"{self.messages} messages ({self.size} bytes) over the rate of "
                f"{limits.bytes_per_second} bytes per second"
            )
        if self.evidence:
            parts.append(
                f"{self.evidence} evidence over the rate of {limits.evidence_per_minute} a minute"
            )
        return "dropped " + " and ".join(parts)


@dataclass
class Budget:
    """One CVM's budgets on this replica."""

    limits: AgentLimits
    now: float
    size: TokenBucket = field(init=False)
    evidence: TokenBucket = field(init=False)
    dropped: Dropped = field(default_factory=Dropped)

    def __post_init__(self) -> None:
        rate = self.limits.bytes_per_second
        self.size = TokenBucket(rate * BURST_SECONDS, rate, updated=self.now)
        per_minute = self.limits.evidence_per_minute
        self.evidence = TokenBucket(per_minute, per_minute / 60, updated=self.now)

    def allow_message(self, size: int, now: float, *, kept: int | None = None) -> bool:
        """A message of ``size`` bytes, of which ``kept`` are stored (all by default)."""
        cost = size if kept is None else min(size, kept)
        if self.size.take(max(cost, MIN_MESSAGE_COST), now):
            return True
        self.dropped.messages += 1
        self.dropped.size += size
        return False

    def allow_evidence(self, now: float) -> bool:
        if self.evidence.take(1, now):
            return True
        self.dropped.evidence += 1
        return False

    def take_dropped(self) -> Dropped | None:
        """What was dropped since the last call, once."""
        if not self.dropped:
            return None
        dropped, self.dropped = self.dropped, Dropped()
        return dropped

    def idle(self, now: float) -> bool:
        """Nothing owed and nothing to report: safe to forget."""
        return not self.dropped and self.size.full(now) and self.evidence.full(now)


def cut(text: str, max_bytes: int) -> str:
    """``text`` if it fits in ``max_bytes`` of UTF-8, else its head (whole
    characters) and a mark saying how long it was."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return text
    mark = CUT_MARK.format(size=len(encoded))
    room = max(0, max_bytes - len(mark.encode()))
    return encoded[:room].decode("utf-8", "ignore") + mark
