"""Retry delays: capped exponential backoff with full jitter (pure)."""

from __future__ import annotations

import random


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Full jitter (uniform in [0, min(cap, base * 2**(attempt-1))]) spreads
    retries of many CVMs hitting the same capacity error, instead of having
    them come back in lockstep; a floor of a tenth of ``base`` keeps a retry
    from firing at once.
    """
    exponent = min(max(attempt - 1, 0), 32)
    ceiling = min(cap, base * (2**exponent))
    return max(base / 10, rng.uniform(0, ceiling))
