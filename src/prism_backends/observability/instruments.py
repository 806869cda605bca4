"""Every metric the service's processes move, made on first use.

Made lazily, not at import, because prometheus_client picks where values
live (this process's memory, or files shared by every process of a
deployment) when a metric is made: ``exposition.share_between_processes``
must run first in a process that shares, and it runs after the command line
is read. Labels are bounded by design: route names, providers, operations,
outcomes, platforms and reason kinds, never ids.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

# Seconds; from a cached read to a cloud's slow create.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROVIDER_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True, slots=True)
class Instruments:
    api_requests: Counter
    http_requests: Counter
    http_duration: Histogram
    evidence: Counter
    provider_calls: Counter
    provider_duration: Histogram
    sweep_removed: Counter


@functools.cache
def instruments() -> Instruments:
    return Instruments(
        # Named as Prism's Go services name theirs (go-kit): its dashboards read these.
        api_requests=Counter(
            "backends_api_request_count",
            "Requests answered, by API method (the route's name) and HTTP status.",
            ["method", "status"],
        ),
        # What Prism's alert rules read.
        http_requests=Counter(
            "http_requests", "HTTP requests answered, by status code.", ["status_code"]
        ),
        http_duration=Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte.",
            buckets=HTTP_BUCKETS,
        ),
        evidence=Counter(
            "backends_evidence",
            "Attestation evidence appraised: verified, or refused with the kind of reason.",
            ["platform", "outcome", "reason"],
        ),
        provider_calls=Counter(
            "backends_provider_calls",
            "Calls to a provider's driver, by operation and outcome "
            "(ok, retryable, terminal, error).",
            ["provider", "operation", "outcome"],
        ),
        provider_duration=Histogram(
            "backends_provider_call_duration_seconds",
            "How long a provider's driver took to answer.",
            ["provider", "operation"],
            buckets=PROVIDER_BUCKETS,
        ),
        sweep_removed=Counter(
            "backends_leak_sweep_removed",
            "Machines the leak sweep removed: ours, but owned by no live CVM.",
            ["provider"],
        ),
    )
