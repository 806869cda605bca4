"""``backends_api_request_latency_microseconds``: a summary with quantiles,
as Prism's dashboards read it (go-kit's summary). prometheus_client's
Summary has no quantiles, so this keeps each method's latest latencies and
works them out at scrape time.

Per process: with several ``api`` processes each answers for its own
requests (quantiles cannot be added up across processes); the counter and
the histogram beside it are the deployment's totals.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator

from prometheus_client.core import Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

QUANTILES = (0.5, 0.9, 0.99)
# Enough for a 0.99 quantile that moves with the traffic: the latest 1024 per method.
WINDOW = 1024


class _Method:
    __slots__ = ("count", "recent", "total")

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.count = 0
        self.total = 0.0


class LatencyWindow(Collector):
    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}
        self._lock = threading.Lock()

    def observe(self, method: str, microseconds: float) -> None:
        with self._lock:
            kept = self._methods.get(method)
            if kept is None:
                kept = self._methods[method] = _Method()
            kept.recent.append(microseconds)
            kept.count += 1
            kept.total += microseconds

    def collect(self) -> Iterator[Metric]:
        family = SummaryMetricFamily(
            "backends_api_request_latency_microseconds",
            "Total duration of requests in microseconds, by API method (this process's "
            "latest requests for the quantiles).",
            labels=["method"],
        )
        with self._lock:
            snapshot = [
                (name, sorted(kept.recent), kept.count, kept.total)
                for name, kept in self._methods.items()
            ]
        for name, ordered, count, total in sorted(snapshot):
            family.add_metric([name], count_value=count, sum_value=total)
            for quantile in QUANTILES:
                family.add_sample(
                    family.name,
                    {"method": name, "quantile": str(quantile)},
                    quantile_of(ordered, quantile),
                )
        yield family


def quantile_of(ordered: list[float], quantile: float) -> float:
    """The nearest-rank quantile of sorted values (NaN for none, as go-kit reports)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1))
    return ordered[rank]
