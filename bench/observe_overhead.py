"""What observability costs: the request middleware per request, and a scrape of
``/metrics`` over a store of many CVMs.

    uv run python -m bench.observe_overhead                        # 100,000 CVMs, SQLite
    uv run python -m bench.observe_overhead --cvms 10000 --requests 20000

Per request: the same trivial ASGI app called ``--requests`` times bare and
behind ``ObserveRequests`` (request id, log context, two counters, a
histogram, the latency window), in a child process per mode, since
prometheus_client's mode is the whole process's: ``memory`` (one process,
the tests) and ``shared`` (files in a metrics directory, as ``serve``,
``api`` and ``worker`` run). Prints the CPU microseconds the middleware adds
per request: set it beside the milliseconds a view costs
(``bench/http_compare``).

Per scrape: ``StoreGauges`` and the rendering over a SQLite store filled by
``bench/cvm_fill`` (the population of ``http_compare``), timed ``--scrapes``
times; prints p50 and the worst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cvm_fill import fill_sqlite
from bench.harness import main_guard, percentile

MODES = ("memory", "shared")


async def _bare(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


class _Route:
    name = "view_cvm"


def _cpu_per_call(app: Any, requests: int) -> float:
    scope_template = {
        "type": "http",
        "method": "GET",
        "path": "/backends/d/cvms/x",
        "headers": [(b"x-request-id", b"bench-1")],
        "route": _Route(),
        "path_params": {"domainID": "d", "id": "x"},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_message: Any) -> None:
        return None

    async def run() -> float:
        started = time.process_time()
        for _ in range(requests):
            await app(dict(scope_template), receive, send)
        return (time.process_time() - started) / requests

    return asyncio.run(run())


def child(mode: str, requests: int) -> dict[str, float]:
    """In a process of its own: the middleware's added CPU per request."""
    from prism_backends.observability import exposition
    from prism_backends.observability.latency import LatencyWindow
    from prism_backends.observability.middleware import ObserveRequests

    if mode == "shared":
        exposition.share_between_processes(Path(tempfile.mkdtemp(prefix="bench-metrics-")))
    observed = ObserveRequests(_bare, LatencyWindow())
    _cpu_per_call(observed, 1000)  # warm: the series exist before they are timed
    bare = min(_cpu_per_call(_bare, requests) for _ in range(3))
    behind = min(_cpu_per_call(observed, requests) for _ in range(3))
    return {"bare_us": bare * 1e6, "observed_us": behind * 1e6, "added_us": (behind - bare) * 1e6}


def scrape_times(cvms: int, scrapes: int) -> list[float]:
    from prism_backends.config import Settings
    from prism_backends.db import migrate
    from prism_backends.observability import exposition
    from prism_backends.observability.latency import LatencyWindow
    from prism_backends.observability.store import StoreGauges
    from prism_backends.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        data = Path(tmp)
        runtime = Runtime(Settings(data_dir=data))
        try:
            migrate.upgrade(runtime.engine)
            fill_sqlite(data / "prism-backends.db", cvms=cvms, other_domains=100, seed=1)
            collected = exposition.registry(LatencyWindow(), StoreGauges(runtime.sessions))
            times = []
            for _ in range(scrapes):
                started = time.perf_counter()
                exposition.render(collected)
                times.append(time.perf_counter() - started)
            return sorted(times)
        finally:
            runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--cvms", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.requests)))
        return 0
    print(f"middleware, {args.requests} requests a run, best of 3 (CPU µs per request):")
    print(f"{'mode':<8} {'bare':>8} {'observed':>9} {'added':>8}")
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, "-m", "bench.observe_overhead", "--child", mode,
             "--requests", str(args.requests)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        figures = json.loads(done.stdout)
        print(
            f"{mode:<8} {figures['bare_us']:>8.1f} {figures['observed_us']:>9.1f} "
            f"{figures['added_us']:>8.1f}"
        )
    times = scrape_times(args.cvms, args.scrapes)
    p50, worst = percentile(times, 0.5) or 0.0, times[-1]
    print(f"/metrics over {args.cvms} CVMs (SQLite), {args.scrapes} scrapes:")
    print(f"  p50 {p50 * 1e3:.1f} ms, worst {worst * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    main_guard(main)
