"""HTTP latency of the CVM routes against a filled PostgreSQL store.

Usage::

    uv run python -m bench.http_latency [--database-url URL] [--cvms 100000]
        [--other-domains 1000] [--requests N] [--concurrency C]

What it does, in order:

1. drops and recreates its own database (the last path segment of
   ``--database-url``, which must contain ``bench``), then runs
   ``prism-backends migrate`` on it as a subprocess;
2. fills it with binary COPY: ``--cvms`` CVMs in one domain and 10-50 CVMs in
   each of ``--other-domains`` domains (names, statuses, providers, platforms,
   vCPUs, attestation reports and tokens of realistic sizes, ``created_at``
   spread over 90 days, about 12 % deleted), runs ``--after-fill-sql`` if given
   (e.g. a candidate index), then ``VACUUM (ANALYZE)`` -- the state autovacuum
   would reach on a store that has been running a while;
3. issues a bearer token with ``prism-backends token issue`` and starts
   ``prism-backends serve`` as a real subprocess on a free port;
4. over real HTTP (httpx, ``--concurrency`` keep-alive connections driven by
   asyncio) measures every operation in turn: a warm-up, then up to
   ``--requests`` requests or ``--max-seconds`` seconds, whichever comes first;
5. prints a table (operation, n, errors, p50 ms, p99 ms, req/s) and writes it as
   JSON to ``bench/results/http_latency.json``;
6. stops the server and drops the database, also on error, Ctrl-C or SIGTERM.

It asserts nothing about speed. The client and the server share the machine's
cores, so the figures include the client's own cost; compare runs made on the
same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench.cvm_fill import (
    MAIN_DOMAIN,
    NAME_QUERIES,
    Fill,
    approximate_rows,
    describe_fill,
    fill_database,
    run_sql_file,
)
from bench.harness import (
    BASE_PATH,
    Call,
    Operation,
    Result,
    Server,
    bench_store,
    cancel_on_sigterm,
    checked_bench_url,
    exit_cleanly_on_signals,
    main_guard,
    measure,
    postgres_facts,
    run_cli,
    table,
    vacuum_analyze,
    write_json,
)

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "http_latency.json"


def operations(fill: Fill, *, seed: int) -> list[Operation]:
    rng = random.Random(seed + 1)
    cvms = f"{BASE_PATH}/{MAIN_DOMAIN}/cvms"
    ids = fill.main_live_ids
    names = itertools.cycle(NAME_QUERIES)
    run = uuid.uuid4().hex[:8]
    created = itertools.count()
    low_offset = fill.main_live // 2
    high_offset = max(low_offset + 1, fill.main_live - 10)

    def listing(**params: str) -> Callable[[], Call]:
        return lambda: Call("GET", cvms, params or None)

    def create() -> Call:
        body = json.dumps({"name": f"bench-{run}-{next(created):06d}"}).encode()
        return Call("POST", f"{cvms}/external/2/sev-snp", body=body, expect=201)

    return [
        Operation("view", lambda: Call("GET", f"{cvms}/{rng.choice(ids)}")),
        Operation("list", listing()),
        Operation("list limit=100", listing(limit="100")),
        Operation("list name=<substring>", lambda: Call("GET", cvms, {"name": next(names)})),
        Operation("list status=running", listing(status="running")),
        Operation("list cc_platform=tdx", listing(cc_platform="tdx")),
        Operation("list days=7", listing(days="7")),
        Operation("list status=inactive", listing(status="inactive")),
        Operation(
            "list offset=<deep>",
            lambda: Call("GET", cvms, {"offset": str(rng.randrange(low_offset, high_offset))}),
        ),
        Operation("create", create),
    ]


async def measure_all(
    base: str, token: str, ops: list[Operation], args: argparse.Namespace
) -> list[Result]:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    results = []
    undo = cancel_on_sigterm()
    try:
        async with httpx.AsyncClient(
            base_url=base, headers=headers, limits=limits, timeout=120.0
        ) as client:
            for operation in ops:
                result = await measure(
                    client,
                    operation,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    max_seconds=args.max_seconds,
                    warmup=args.warmup,
                )
                print(
                    f"  {result.operation:<24} n={result.n:<5} {result.seconds:6.1f}s",
                    flush=True,
                )
                results.append(result)
    finally:
        undo()
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_latency",
        description="HTTP latency of the CVM routes on a filled PostgreSQL store.",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="SQLAlchemy URL of the benchmark's own database, DROPPED and recreated; "
        "its name must contain 'bench' (default: %(default)s)",
    )
    parser.add_argument(
        "--admin-database",
        default="postgres",
        help="database to connect to for DROP/CREATE DATABASE (default: %(default)s)",
    )
    parser.add_argument("--cvms", type=int, default=100_000, help="CVMs in the main domain")
    parser.add_argument(
        "--other-domains", type=int, default=1_000, help="other domains, 10-50 CVMs each"
    )
    parser.add_argument(
        "--requests", type=int, default=400, help="measured requests per operation at most"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=15.0,
        help="stop measuring an operation after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="unmeasured requests before each operation"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the data and request mix")
    parser.add_argument(
        "--server-log-level",
        default="warning",
        help="the server's --log-level; 'info' adds an access log line per request",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    parser.add_argument(
        "--after-fill-sql",
        type=Path,
        help="SQL file run after the fill, before VACUUM ANALYZE and the server: e.g. a "
        "candidate index, to compare with a run without it (';'-separated statements)",
    )
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="leave the filled database in place (to EXPLAIN queries); dropped otherwise",
    )
    args = parser.parse_args(argv)
    for name in ("cvms", "requests", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.other_domains < 0 or args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--other-domains and --warmup must be >= 0, --max-seconds > 0")
    checked_bench_url(args.database_url)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    exit_cleanly_on_signals()
    database = str(make_url(args.database_url).database)

    # The directory goes last: the server writes its log there until stopped.
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp, ExitStack() as cleanup:
        data_dir = Path(tmp)
        print(f"database {database}: drop, create, migrate", flush=True)
        store = cleanup.enter_context(
            bench_store(
                "postgres",
                data_dir,
                database_url=args.database_url,
                admin_database=args.admin_database,
                keep=args.keep_database,
            )
        )
        assert store.conninfo is not None
        conninfo = store.conninfo
        print(
            f"filling about {approximate_rows(args.cvms, args.other_domains):,} CVMs ...",
            flush=True,
        )
        fill = fill_database(
            conninfo, cvms=args.cvms, other_domains=args.other_domains, seed=args.seed
        )
        after_fill = run_sql_file(conninfo, args.after_fill_sql) if args.after_fill_sql else []
        if after_fill:
            print(f"ran {len(after_fill)} statements of {args.after_fill_sql}", flush=True)
        fill.vacuum_seconds = vacuum_analyze(conninfo)
        print(describe_fill(fill), flush=True)

        token = run_cli("token", "issue", "--domain", MAIN_DOMAIN, "--data-dir", str(data_dir))
        server = Server(store.url, data_dir, args.server_log_level)
        cleanup.callback(server.stop)
        server.wait_ready()
        print(
            f"server on {server.base} (pid {server.process.pid}); "
            f"{args.requests} requests per operation at most, concurrency {args.concurrency}",
            flush=True,
        )

        try:
            results = asyncio.run(
                measure_all(server.base, token.strip(), operations(fill, seed=args.seed), args)
            )
        except asyncio.CancelledError:
            print("terminated; cleaning up", file=sys.stderr)
            raise SystemExit(128 + signal.SIGTERM) from None
        except KeyboardInterrupt:
            raise
        except BaseException:
            print(f"--- server log tail ---\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            exit_cleanly_on_signals()
        if server.process.poll() is not None:
            raise RuntimeError(f"the server died during the run:\n{server.log_tail()}")
        meta = {
            "benchmark": "http_latency",
            "started_at": started_at,
            "database": database,
            "main_domain": MAIN_DOMAIN,
            "main_live": fill.main_live,
            "main_deleted": fill.main_deleted,
            "other_domains": fill.other_domains,
            "other_rows": fill.other_rows,
            "fill_seconds": round(fill.seconds, 2),
            "vacuum_analyze_seconds": round(fill.vacuum_seconds, 2),
            "after_fill_sql": after_fill,
            "requests_per_operation": args.requests,
            "max_seconds_per_operation": args.max_seconds,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "seed": args.seed,
            "server_log_level": args.server_log_level,
            "cpu_count": os.cpu_count(),
            "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "postgres": postgres_facts(conninfo),
            "percentiles": "nearest rank, over every measured request (errors included)",
        }

    print()
    print(table(results))
    for result in results:
        if result.first_error:
            print(f"{result.operation}: {result.errors} errors, first: {result.first_error}")
    write_json(args.output, meta, results)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    main_guard(main)
