"""Latency of the statistics route on 90 days of uptime samples of 10,000 CVMs.

Usage::

    uv run python -m bench.stats_query [--cvms 10000] [--days 90] [--requests 500]

What it does, in order:

1. drops and recreates its own database (the last path segment of
   ``--database-url``, which must contain ``bench``), then runs
   ``prism-backends migrate`` on it as a subprocess;
2. fills it with binary COPY: ``--cvms`` provisioned external CVMs, and ``--days``
   days of 5-minute samples of each in the storage the service uses, one
   ``cvm_uptime_days`` row per CVM per day (two 36-byte bitmaps, every slot
   seen, the agent down now and then), written day by day as the sampler writes
   them, today's only up to the current slot; the table's secondary
   constraints are dropped meanwhile and rebuilt from their own definitions,
   then ``VACUUM (ANALYZE)``;
3. issues a bearer token with ``prism-backends token issue`` and starts
   ``prism-backends serve`` as a real subprocess on a free port;
4. over real HTTP (httpx, ``--concurrency`` keep-alive connections) measures
   ``GET /backends/{d}/cvms/{id}/statistics`` for random CVMs with ``?days=1``,
   ``?days=90&limit=100`` and ``?days=90&limit=10000`` (the largest page): a
   warm-up, then up to ``--requests`` requests or ``--max-seconds`` seconds;
5. to tell where the time goes, also times, in this process, the SQL of the
   route alone (psycopg) and the service function ``get_statistics`` alone
   (the SQLAlchemy query and the bitmap decoding, no HTTP, no JSON);
6. prints the tables and the size of ``cvm_uptime_days`` on disk, and writes
   them as JSON to ``bench/results/stats_query.json``;
7. stops the server and drops the database, also on error, Ctrl-C or SIGTERM.

It asserts nothing about speed. The client and the server share the machine's
cores; the data is in memory (just written), so the figures are warm-cache ones.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.harness import (
    BASE_PATH,
    Call,
    Operation,
    Result,
    Server,
    drop_database,
    exit_cleanly_on_signals,
    libpq_conninfo,
    measure,
    percentile,
    recreate_database,
    run_cli,
)
from bench.harness import table as results_table
from bench.store import copy_model_rows
from prism_backends.auth.permissions import Role
from prism_backends.auth.principal import Principal
from prism_backends.cvms.models import CVM
from prism_backends.cvms.service import get_statistics
from prism_backends.db.engine import make_engine, make_session_factory, unit_of_work
from prism_backends.statistics.bitmap import bitmap_size, slot_index, slot_start, slots_per_day

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench_stats"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "stats_query.json"
DOMAIN = "bench-stats"
INTERVAL = 300  # the service's default stats_interval_seconds
RETENTION_DAYS = 90  # the service's default stats_retention_days
UP_PATTERNS = 512  # distinct "up" bitmaps drawn from (outages of varied length)
OUTAGE_CHANCE = 0.08  # of a CVM-day having an outage

# The CVM columns given; the others take the model's defaults (bench/store.py).
CVM_COLUMNS = (
    "id",
    "domain_id",
    "name",
    "provider",
    "cc_platform",
    "vcpus",
    "agent_log_level",
    "cvm_id",
    "state",
    "status",
    "monthly_cost_cents",
    "price_table_version",
    "created_at",
    "updated_at",
    "request_digest",
)
DAY_COLUMNS = (
    ("cvm_id", "varchar"),
    ("day", "date"),
    ("interval_seconds", "int4"),
    ("seen", "bytea"),
    ("up", "bytea"),
)

# The SQL the route runs (statistics.repository.days_since), for timing it alone.
DAYS_SQL = (
    "SELECT id, cvm_id, day, interval_seconds, seen, up FROM cvm_uptime_days"
    " WHERE cvm_id = %(cvm)s"
    " AND cvm_id IN (SELECT id FROM cvms WHERE domain_id = %(domain)s AND id = %(cvm)s)"
    " AND day >= %(since)s ORDER BY day DESC, interval_seconds"
)


# --- The data ------------------------------------------------------------------------------


@dataclass
class Fill:
    cvm_ids: list[str]
    day_rows: int = 0
    seconds: float = 0.0
    vacuum_seconds: float = 0.0
    first_day: str = ""
    last_day: str = ""


def _set_bits(bits: bytearray, first: int, count: int, value: bool) -> None:
    for index in range(first, first + count):
        byte, mask = index // 8, 1 << (index % 8)
        if value:
            bits[byte] |= mask
        else:
            bits[byte] &= ~mask & 0xFF


def fill_database(conninfo: str, *, cvms: int, days: int, seed: int) -> Fill:
    """COPY the CVMs, then their day rows oldest day first, each day's rows together (the
    physical order the sampler leaves: it writes every CVM's row of a day at that day's
    first slot), with the secondary constraints dropped meanwhile."""
    rng = random.Random(seed)  # test data, not security
    now = datetime.now(UTC)
    slots = slots_per_day(INTERVAL)
    size = bitmap_size(INTERVAL)
    full = bytearray(size)
    _set_bits(full, 0, slots, True)
    full_day = bytes(full)
    patterns = [full_day]
    for _ in range(UP_PATTERNS - 1):
        outage = bytearray(full_day)
        length = rng.choice((1, 1, 2, 3, 6, 12, 36, 144))  # 5 minutes to 12 hours down
        _set_bits(outage, rng.randrange(0, slots - length), length, False)
        patterns.append(bytes(outage))
    today, current_slot = slot_index(now, INTERVAL)
    seen_today = bytearray(size)
    _set_bits(seen_today, 0, current_slot + 1, True)
    first_day = today - timedelta(days=days - 1)

    fill = Fill(cvm_ids=[str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(cvms)])
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn:
        created = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
        cvm_rows = (
            (
                cvm_id,
                DOMAIN,
                f"stats-{index:05d}",
                "external",
                "sev-snp" if index % 5 < 3 else "tdx",
                2,
                "info",
                cvm_id,
                "provisioned",
                "running",
                1800,
                "2026-11",
                created - timedelta(hours=1),
                now,
                hashlib.sha256(cvm_id.encode()).hexdigest(),
            )
            for index, cvm_id in enumerate(fill.cvm_ids)
        )
        copy_model_rows(conn, CVM, CVM_COLUMNS, cvm_rows)
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'cvm_uptime_days'::regclass AND contype IN ('u', 'f')"
        ).fetchall()
        for name, _ in constraints:
            conn.execute(
                sql.SQL("ALTER TABLE cvm_uptime_days DROP CONSTRAINT {}").format(
                    sql.Identifier(name)
                )
            )
        columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in DAY_COLUMNS)
        copy_days = sql.SQL("COPY cvm_uptime_days ({}) FROM STDIN (FORMAT BINARY)").format(columns)
        with conn.cursor() as cursor, cursor.copy(copy_days) as copy:
            copy.set_types([type_name for _, type_name in DAY_COLUMNS])
            for offset in range(days):
                day: date = first_day + timedelta(days=offset)
                seen = bytes(seen_today) if day == today else full_day
                for cvm_id in fill.cvm_ids:
                    up = full_day
                    if rng.random() < OUTAGE_CHANCE:
                        up = patterns[rng.randrange(1, UP_PATTERNS)]
                    if day == today:
                        up = bytes(a & b for a, b in zip(up, seen, strict=True))
                    copy.write_row((cvm_id, day, INTERVAL, seen, up))
                    fill.day_rows += 1
        # Today's bitmaps hold the current slot: it has been sampled, as the server's
        # sampler would otherwise do (one write per CVM) as soon as it starts.
        conn.execute(
            "INSERT INTO sampled_slots (slot_at, sampled_by, sampled_at) VALUES (%s, %s, %s)",
            (slot_start(now, INTERVAL), "bench-fill", now),
        )
        for name, definition in constraints:
            conn.execute(
                sql.SQL("ALTER TABLE cvm_uptime_days ADD CONSTRAINT {} {}").format(
                    sql.Identifier(name), sql.SQL(definition)
                )
            )
        conn.commit()
    fill.seconds = time.perf_counter() - started
    fill.first_day, fill.last_day = first_day.isoformat(), today.isoformat()
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) cvms, cvm_uptime_days")
    fill.vacuum_seconds = time.perf_counter() - started
    return fill


def table_sizes(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('cvm_uptime_days'),"
            " pg_relation_size('cvm_uptime_days'),"
            " pg_indexes_size('cvm_uptime_days'),"
            " pg_total_relation_size('cvm_uptime_days') - pg_relation_size('cvm_uptime_days')"
            " - pg_indexes_size('cvm_uptime_days'),"
            " (SELECT count(*) FROM cvm_uptime_days),"
            " pg_total_relation_size('cvms')"
        ).fetchone()
    assert row is not None
    keys = ("total", "heap", "indexes", "toast_and_maps", "rows", "cvms_total")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def postgres_facts(conninfo: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    with psycopg.connect(conninfo) as conn:
        for setting in ("server_version", "shared_buffers", "work_mem", "jit"):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            facts[setting] = str(row[0]) if row else ""
    return facts


# --- In-process timings --------------------------------------------------------------------


@dataclass
class Timing:
    what: str
    n: int
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    rows_per_call: float


def _timing(what: str, durations: list[float], rows: int) -> Timing:
    ordered = sorted(durations)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return Timing(
        what=what,
        n=len(ordered),
        p50_ms=ms(percentile(ordered, 0.5)),
        p99_ms=ms(percentile(ordered, 0.99)),
        mean_ms=ms(sum(ordered) / len(ordered) if ordered else None),
        rows_per_call=round(rows / len(ordered), 1) if ordered else 0.0,
    )


def time_sql(conninfo: str, cvm_ids: list[str], *, days: int, calls: int, seed: int) -> Timing:
    """The route's SQL alone, as a prepared statement on one connection."""
    rng = random.Random(seed)
    since = (datetime.now(UTC) - timedelta(days=days)).date()
    durations: list[float] = []
    rows = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for number in range(calls + 10):
            params = {"cvm": rng.choice(cvm_ids), "domain": DOMAIN, "since": since}
            started = time.perf_counter()
            found = conn.execute(DAYS_SQL, params, prepare=True).fetchall()
            elapsed = time.perf_counter() - started
            if number >= 10:  # the first ones warm up the plan cache
                durations.append(elapsed)
                rows += len(found)
    return _timing(f"SQL alone, days={days}", durations, rows)


def time_service(
    database_url: str, cvm_ids: list[str], *, days: int, limit: int, calls: int, seed: int
) -> Timing:
    """``cvms.service.get_statistics`` alone: its queries through SQLAlchemy, the bitmaps
    decoded into samples and sorted; no HTTP, no authentication, no JSON."""
    rng = random.Random(seed)
    engine = make_engine(database_url, pool_size=1)
    sessions = make_session_factory(engine)
    principal = Principal("bench", {DOMAIN: Role.MEMBER})
    durations: list[float] = []
    samples = 0
    try:
        for number in range(calls + 10):
            cvm_id = rng.choice(cvm_ids)
            started = time.perf_counter()
            with unit_of_work(sessions) as session:
                page = get_statistics(
                    principal,
                    session,
                    domain_id=DOMAIN,
                    cvm_id=cvm_id,
                    days=str(days),
                    limit=str(limit),
                    offset=None,
                    retention_days=RETENTION_DAYS,
                )
            elapsed = time.perf_counter() - started
            if number >= 10:
                durations.append(elapsed)
                samples += page.total
    finally:
        engine.dispose()
    timing = _timing(f"get_statistics alone, days={days} limit={limit}", durations, 0)
    timing.rows_per_call = round(samples / len(durations), 1) if durations else 0.0
    return timing


# --- The requests --------------------------------------------------------------------------


def operations(cvm_ids: list[str], *, days: int, seed: int) -> list[Operation]:
    rng = random.Random(seed + 1)

    def statistics(**params: str) -> Callable[[], Call]:
        return lambda: Call(
            "GET", f"{BASE_PATH}/{DOMAIN}/cvms/{rng.choice(cvm_ids)}/statistics", params
        )

    return [
        Operation("days=1", statistics(days="1")),
        Operation(f"days={days} limit=100", statistics(days=str(days), limit="100")),
        Operation(f"days={days} limit=10000", statistics(days=str(days), limit="10000")),
    ]


def check_response(base: str, token: str, cvm_id: str, days: int) -> dict[str, Any]:
    """One request of each shape, to show the answers are what they should be."""
    facts: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for window, limit in ((1, 100), (days, 100), (days, 10_000)):
            response = client.get(
                f"{BASE_PATH}/{DOMAIN}/cvms/{cvm_id}/statistics",
                params={"days": str(window), "limit": str(limit)},
            )
            response.raise_for_status()
            body = response.json()
            facts[f"days={window} limit={limit}"] = {
                "total": body["total"],
                "returned": len(body["cvm_stats"]),
                "uptime": body["uptime"],
                "response_bytes": len(response.content),
            }
    return facts


async def measure_all(
    base: str, token: str, ops: list[Operation], args: argparse.Namespace
) -> list[Result]:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    assert this is not None
    loop.add_signal_handler(signal.SIGTERM, this.cancel)
    results = []
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
        loop.remove_signal_handler(signal.SIGTERM)
    return results


def sampled_slots(conninfo: str) -> int:
    """Slots the server's sampler took during the run (it updates one row per CVM)."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM sampled_slots").fetchone()
    return int(row[0]) if row else 0


# --- Output --------------------------------------------------------------------------------


def timings_table(timings: list[Timing]) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    header = f"{'in process':<40} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'rows/samples':>13}"
    lines = [header, "-" * len(header)]
    for t in timings:
        lines.append(
            f"{t.what:<40} {t.n:>6} {number(t.p50_ms):>9} {number(t.p99_ms):>9} "
            f"{t.rows_per_call:>13.1f}"
        )
    return "\n".join(lines)


def mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


# --- Main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stats_query",
        description="Latency of the statistics route on 90 days of 5-minute uptime samples.",
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
    parser.add_argument("--cvms", type=int, default=10_000, help="CVMs with samples")
    parser.add_argument(
        "--days",
        type=int,
        default=RETENTION_DAYS,
        help="days of samples per CVM, today included (default: %(default)s, the retention)",
    )
    parser.add_argument(
        "--requests", type=int, default=500, help="measured requests per operation at most"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests in flight (default: %(default)s: latency, not throughput)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="stop measuring an operation after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured requests before each operation"
    )
    parser.add_argument(
        "--in-process-calls",
        type=int,
        default=300,
        help="calls of the SQL alone and of the service function alone (0: skip)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the data and request mix")
    parser.add_argument(
        "--server-log-level",
        default="warning",
        help="the server's --log-level; 'info' adds an access log line per request",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="leave the filled database in place (to EXPLAIN queries); dropped otherwise",
    )
    args = parser.parse_args(argv)
    for name in ("cvms", "requests", "concurrency", "days"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.days > RETENTION_DAYS:
        parser.error(f"--days must be at most {RETENTION_DAYS} (the retention the server prunes)")
    if args.warmup < 0 or args.max_seconds <= 0 or args.in_process_calls < 0:
        parser.error("--warmup and --in-process-calls must be >= 0, --max-seconds > 0")
    url = make_url(args.database_url)
    if not url.drivername.startswith("postgresql") or not url.database:
        parser.error("--database-url must be a PostgreSQL URL with a database name")
    if "bench" not in url.database:
        parser.error(f"refusing to drop database {url.database!r}: its name must contain 'bench'")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    exit_cleanly_on_signals()
    url = make_url(args.database_url)
    database = str(url.database)
    database_url = url.render_as_string(hide_password=False)
    conninfo = libpq_conninfo(url)
    admin = libpq_conninfo(url.set(database=args.admin_database))

    with tempfile.TemporaryDirectory(prefix="prism-bench-stats-") as tmp, ExitStack() as cleanup:
        data_dir = Path(tmp)
        print(f"database {database}: drop, create, migrate", flush=True)
        recreate_database(admin, database)
        if not args.keep_database:
            cleanup.callback(drop_database, admin, database)
        else:
            cleanup.callback(print, f"kept database {database} ({database_url})")
        run_cli("migrate", "--database-url", database_url, "--data-dir", str(data_dir))

        print(
            f"filling {args.cvms:,} CVMs x {args.days} days = {args.cvms * args.days:,} "
            "day rows ...",
            flush=True,
        )
        fill = fill_database(conninfo, cvms=args.cvms, days=args.days, seed=args.seed)
        sizes = table_sizes(conninfo)
        print(
            f"filled in {fill.seconds:.1f}s (+ VACUUM ANALYZE {fill.vacuum_seconds:.1f}s): "
            f"{sizes['rows']:,} rows, {fill.first_day} .. {fill.last_day}; cvm_uptime_days "
            f"{mib(sizes['total'])} on disk",
            flush=True,
        )

        timings: list[Timing] = []
        if args.in_process_calls:
            print("timing the SQL and the service function in this process ...", flush=True)
            for days in (1, args.days):
                timings.append(
                    time_sql(
                        conninfo, fill.cvm_ids, days=days, calls=args.in_process_calls, seed=days
                    )
                )
            for days, limit in ((1, 1000), (args.days, 100)):
                timings.append(
                    time_service(
                        database_url,
                        fill.cvm_ids,
                        days=days,
                        limit=limit,
                        calls=args.in_process_calls,
                        seed=days,
                    )
                )

        token = run_cli("token", "issue", "--domain", DOMAIN, "--data-dir", str(data_dir))
        server = Server(database_url, data_dir, args.server_log_level)
        cleanup.callback(server.stop)
        server.wait_ready()
        slots_before = sampled_slots(conninfo)
        answers = check_response(server.base, token.strip(), fill.cvm_ids[0], args.days)
        print(
            f"server on {server.base} (pid {server.process.pid}); one CVM's answers: "
            + "; ".join(
                f"{shape}: total {fact['total']:,}, {fact['returned']:,} returned, "
                f"{fact['response_bytes']:,} bytes"
                for shape, fact in answers.items()
            ),
            flush=True,
        )

        try:
            results = asyncio.run(
                measure_all(
                    server.base,
                    token.strip(),
                    operations(fill.cvm_ids, days=args.days, seed=args.seed),
                    args,
                )
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
        slots_during = sampled_slots(conninfo) - slots_before
        meta = {
            "benchmark": "stats_query",
            "started_at": started_at,
            "database": database,
            "domain": DOMAIN,
            "cvms": args.cvms,
            "days": args.days,
            "interval_seconds": INTERVAL,
            "first_day": fill.first_day,
            "last_day": fill.last_day,
            "day_rows": fill.day_rows,
            "fill_seconds": round(fill.seconds, 2),
            "vacuum_analyze_seconds": round(fill.vacuum_seconds, 2),
            "table_sizes_bytes": sizes,
            "answers_of_one_cvm": answers,
            "requests_per_operation": args.requests,
            "max_seconds_per_operation": args.max_seconds,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "seed": args.seed,
            "server_log_level": args.server_log_level,
            "sampler_slots_taken_during_requests": slots_during,
            "cpu_count": os.cpu_count(),
            "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "postgres": postgres_facts(conninfo),
            "percentiles": "nearest rank, over every measured request (errors included)",
        }

    print()
    print(
        f"cvm_uptime_days: {sizes['rows']:,} rows, {mib(sizes['total'])} in all "
        f"(heap {mib(sizes['heap'])}, indexes {mib(sizes['indexes'])}, "
        f"TOAST and maps {mib(sizes['toast_and_maps'])}); cvms {mib(sizes['cvms_total'])}"
    )
    print()
    print(results_table(results))
    for result in results:
        if result.first_error:
            print(f"{result.operation}: {result.errors} errors, first: {result.first_error}")
    if timings:
        print()
        print(timings_table(timings))
    if slots_during:
        print(
            f"\nthe server's sampler took {slots_during} sampling slot(s) during the requests "
            f"(one write per CVM each): some requests waited for it"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "results": [asdict(r) for r in results],
        "in_process": [asdict(t) for t in timings],
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
