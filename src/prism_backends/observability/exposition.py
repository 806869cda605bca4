"""Where the metrics' values live and how ``/metrics`` renders them.

One process (``serve``, or the tests): in memory. Processes run apart
(``api``, ``worker``, ``agents`` on one host) share a directory
(``metrics_dir``, by default DATA_DIR/metrics): prometheus_client's
multiprocess mode writes each process's values to files there, and any
process's ``/metrics`` adds them up. A process that shares clears the files
of processes that are gone when it starts, except their counters and
histograms, so totals never go backwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest, multiprocess, values
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# Prism's dashboards query go-kit's name, without the ``_total`` prometheus_client adds.
GO_KIT_COUNTERS = {"backends_api_request_count"}


def share_between_processes(directory: Path) -> None:
    """Keep this process's values in ``directory`` (which exists: the caller
    makes it private), beside its siblings'. Before any metric is made
    (``instruments`` makes them on first use)."""
    _forget_gone_processes(directory)
    os.environ[MULTIPROCESS_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def shared_directory() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def _forget_gone_processes(directory: Path) -> None:
    for path in directory.glob("gauge_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(directory))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def registry(*extra: Collector) -> CollectorRegistry:
    """What a scrape reads: every process's values (or this one's), then ``extra``."""
    collected = CollectorRegistry(auto_describe=False)
    if (directory := shared_directory()) is not None:
        multiprocess.MultiProcessCollector(collected, path=directory)  # type: ignore[no-untyped-call]
    else:
        collected.register(prometheus_client.REGISTRY)
    for each in extra:
        collected.register(each)
    return collected


def serve_on_port(host: str, port: int, *extra: Collector) -> None:
    """``/metrics`` of a process without the HTTP API (worker, agents), in a thread."""
    served = CollectorRegistry(auto_describe=False)
    served.register(_GoKitNames(registry(*extra)))
    prometheus_client.start_http_server(port, addr=host, registry=served)


def render(collected: CollectorRegistry) -> bytes:
    return generate_latest(_GoKitNames(collected))


class _GoKitNames(Collector):
    """The metrics of ``source``, with go-kit's counters under their own names
    (as untyped: the text format would add ``_total`` to a counter's)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            if family.name not in GO_KIT_COUNTERS:
                yield family
                continue
            renamed = Metric(family.name, family.documentation, "unknown")
            for sample in family.samples:
                if sample.name == f"{family.name}_total":
                    renamed.add_sample(family.name, sample.labels, sample.value)
            yield renamed
