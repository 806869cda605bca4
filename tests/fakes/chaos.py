"""Random trouble for the cloud fakes: a latency per call, and a failure at a
rate, either before the cloud did anything or after it created the machine
(the caller sees an error; the machine exists all the same)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass
class Injected:
    """A failure a fake gives its next create on command: in the long-running
    operation (``http_status`` 0: it ends failed with ``code``), or as the
    answer to the call itself (an HTTP status and the cloud's error code)."""

    code: str
    message: str = "injected"
    http_status: int = 0


class Trouble(StrEnum):
    NONE = "none"
    BEFORE = "before"  # refused: nothing made
    AFTER = "after"  # made, then the answer is lost


@dataclass
class Chaos:
    rate: float = 0.0
    after_create_share: float = 0.5
    latency_seconds: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> Trouble:
        """Wait this call's latency, then say what goes wrong with it."""
        with self._lock:
            delay = self._rng.uniform(*self.latency_seconds)
            roll, share = self._rng.random(), self._rng.random()
        time.sleep(delay)
        if roll >= self.rate:
            return Trouble.NONE
        return Trouble.AFTER if share < self.after_create_share else Trouble.BEFORE
