"""Token buckets: the rate limits of agents' streams and of HTTP requests.

Pure and clock-free: every call is given ``now`` (monotonic seconds), so
tests drive time and nothing here reads it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second."""

    capacity: float
    rate: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` if it is there; False (nothing spent) if not."""
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity

    def seconds_until(self, amount: float, now: float) -> float:
        """How long until ``amount`` is there (0 if it is now)."""
        self._refill(now)
        return max(0.0, (amount - self.tokens) / self.rate)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


class KeyedLimiter:
    """One bucket per key (a client address, a token's subject), ``rate`` a
    second with bursts of ``burst``. Thread-safe; it remembers at most
    ``max_keys`` keys, forgetting the least recently seen first (a forgotten
    key starts again with a full bucket, which only errs towards letting in)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str, now: float) -> int | None:
        """None when a request under ``key`` may go now (and it is counted);
        otherwise the whole seconds to wait before the next one may."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.burst, self.rate, updated=now)
                if len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            if bucket.take(1, now):
                return None
            return max(1, math.ceil(bucket.seconds_until(1, now)))
