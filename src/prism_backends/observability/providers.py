"""Provider calls, timed and counted by provider, operation and outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from prism_backends.observability.instruments import instruments
from prism_backends.providers.base import RetryableProviderError, TerminalProviderError

T = TypeVar("T")


def timed_call(provider: str, operation: str, call: Callable[[], T]) -> T:
    """``call()``, with its duration and outcome recorded; its errors are raised as they were."""
    started = time.perf_counter()
    outcome = "error"
    try:
        result = call()
        outcome = "ok"
        return result
    except RetryableProviderError:
        outcome = "retryable"
        raise
    except TerminalProviderError:
        outcome = "terminal"
        raise
    finally:
        metrics = instruments()
        metrics.provider_calls.labels(provider, operation, outcome).inc()
        metrics.provider_duration.labels(provider, operation).observe(time.perf_counter() - started)
