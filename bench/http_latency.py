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
import hashlib
import itertools
import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "http_latency.json"
BASE_PATH = "/backends"
MAIN_DOMAIN = "bench-main"

# --- The data (weights are cumulative, for random.choices) ------------------------------

HISTORY = timedelta(days=90)
DELETED_FRACTION = 0.12
PER_OTHER_DOMAIN = (10, 50)
TEAMS = ("payments", "ledger", "search", "ML", "fraud", "identity", "Billing", "kyc", "edge")
ROLES = ("web", "api", "db", "worker", "attest", "enclave", "inference", "batch", "gateway")
ENVS = ("prod", "staging", "dev", "qa")
LIVE_STATUSES = ("running", "offline", "stopped", "starting", "failed")
LIVE_STATUS_WEIGHTS = tuple(itertools.accumulate((70, 8, 10, 4, 8)))
PROVIDERS = ("external", "azure", "gcp", "aws", "ultraviolet")
PROVIDER_WEIGHTS = tuple(itertools.accumulate((35, 25, 20, 15, 5)))
PLATFORMS = ("sev-snp", "tdx")
PLATFORM_WEIGHTS = tuple(itertools.accumulate((60, 40)))
VCPU_CHOICES = (2, 4, 8, 16, 32, 64)
LOG_LEVELS = ("info", "debug", "warn", "error")
LOG_LEVEL_WEIGHTS = tuple(itertools.accumulate((80, 10, 7, 3)))
# Sizes of what an attested CVM carries: an SEV-SNP report is 1184 bytes, a TDX
# quote about 5 KB, the attestation token a JWT of about 1 KB.
REPORT_BYTES = {"sev-snp": 1184, "tdx": 4992}
TOKEN_CHARS = 960
BLOB_POOL = 64
FAILURE_ERRORS = (
    "provider quota exceeded in region",
    "image not found: cvm-base-2026.11",
    "attestation failed: measurement mismatch",
    "timed out waiting for the machine to boot",
)

COLUMNS = (
    ("id", "varchar"),
    ("domain_id", "varchar"),
    ("name", "varchar"),
    ("provider", "varchar"),
    ("cc_platform", "varchar"),
    ("vcpus", "int4"),
    ("agent_log_level", "varchar"),
    ("agent_url", "varchar"),
    ("cvm_id", "varchar"),
    ("state", "varchar"),
    ("status", "varchar"),
    ("error", "text"),
    ("monthly_cost_cents", "int4"),
    ("price_table_version", "varchar"),
    ("attestation", "bytea"),
    ("attestation_token", "text"),
    ("attestation_policy", "bytea"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("deleted_at", "timestamptz"),
    ("idempotency_key", "varchar"),
    ("request_digest", "varchar"),
    ("lease_owner", "varchar"),
    ("lease_expires_at", "timestamptz"),
    ("next_attempt_at", "timestamptz"),
    ("attempts", "int4"),
    ("first_failure_at", "timestamptz"),
    ("attestation_policy_source", "varchar"),
    ("attestation_error", "text"),
    ("attestations_verified", "int4"),
    ("attestations_failed", "int4"),
)

# Name filters rotate over fragments of very different selectivity, in mixed case
# (the filter is case-insensitive): about 11 %, 25 %, 3 % and 0.01 % of the names.
NAME_QUERIES = ("inference", "Prod", "ml-attest", "-0042")


@dataclass
class Fill:
    """What was inserted, and what the requests need to know about it."""

    main_live_ids: list[str] = field(default_factory=list)
    main_live: int = 0
    main_deleted: int = 0
    other_rows: int = 0
    other_domains: int = 0
    seconds: float = 0.0
    vacuum_seconds: float = 0.0


class _Blobs:
    """Pools of incompressible attestation material, drawn from per row."""

    def __init__(self, rng: random.Random) -> None:
        self.reports = {
            p: [rng.randbytes(size) for _ in range(BLOB_POOL)] for p, size in REPORT_BYTES.items()
        }
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        self.tokens = [
            "eyJhbGciOiJFZERTQSJ9." + "".join(rng.choices(alphabet, k=TOKEN_CHARS))
            for _ in range(BLOB_POOL)
        ]
        self.policies = {
            p: json.dumps(
                {
                    "platform": p,
                    "measurement": rng.randbytes(48).hex(),
                    "policy": {"debug": False, "migrate_ma": False, "smt": True},
                    "minimum_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
                    "host_data": rng.randbytes(32).hex(),
                }
            ).encode()
            for p in PLATFORMS
        }


def _cvm_rows(
    rng: random.Random,
    blobs: _Blobs,
    now: datetime,
    domain_id: str,
    count: int,
    fill: Fill,
    *,
    main: bool,
) -> Iterator[tuple[Any, ...]]:
    for index in range(count):
        cvm_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        created_at = now - HISTORY * rng.random()
        provider = rng.choices(PROVIDERS, cum_weights=PROVIDER_WEIGHTS)[0]
        cc_platform = rng.choices(PLATFORMS, cum_weights=PLATFORM_WEIGHTS)[0]
        vcpus = rng.choice(VCPU_CHOICES)
        team, role, env = rng.choice(TEAMS), rng.choice(ROLES), rng.choice(ENVS)
        name = f"{team}-{role}-{env}-{index:05d}"
        deleted_at: datetime | None = None
        error = ""
        attempts = 0
        first_failure_at: datetime | None = None
        if rng.random() < DELETED_FRACTION:
            deleted_at = created_at + (now - created_at) * rng.random()
            status, state = "inactive", "deleted"
            updated_at = deleted_at
        else:
            status = rng.choices(LIVE_STATUSES, cum_weights=LIVE_STATUS_WEIGHTS)[0]
            state = "failed" if status == "failed" else "provisioned"
            updated_at = created_at + (now - created_at) * rng.random()
            if status == "failed":
                error = rng.choice(FAILURE_ERRORS)
                attempts = rng.randint(1, 9)
                first_failure_at = created_at + timedelta(seconds=rng.randint(5, 600))
        attested = state in ("provisioned", "deleted") and status != "starting"
        external = provider == "external"
        if main:
            if deleted_at is None:
                fill.main_live += 1
                fill.main_live_ids.append(cvm_id)
            else:
                fill.main_deleted += 1
        else:
            fill.other_rows += 1
        yield (
            cvm_id,
            domain_id,
            name,
            provider,
            cc_platform,
            vcpus,
            rng.choices(LOG_LEVELS, cum_weights=LOG_LEVEL_WEIGHTS)[0],
            f"https://10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}:7002"
            if external
            else "",
            cvm_id if external else f"{provider}-{rng.getrandbits(48):012x}",
            state,
            status,
            error,
            vcpus * rng.choice((900, 1100, 1450)),
            "2026-11",
            rng.choice(blobs.reports[cc_platform]) if attested else None,
            rng.choice(blobs.tokens) if attested else "",
            None if external else blobs.policies[cc_platform],
            created_at,
            updated_at,
            deleted_at,
            str(uuid.UUID(int=rng.getrandbits(128), version=4)) if rng.random() < 0.3 else None,
            hashlib.sha256(cvm_id.encode()).hexdigest(),
            None,
            None,
            None,  # next_attempt_at: nothing for the lifecycle workers to do
            attempts,
            first_failure_at,
            "" if external else "reference",
            "",
            1 if attested else 0,
            0,
        )


def fill_database(conninfo: str, *, cvms: int, other_domains: int, seed: int) -> Fill:
    """COPY the rows in one transaction, with the secondary indexes dropped meanwhile and
    then recreated from their own definitions (the bulk-load practice: building an index
    once is several times faster than updating it row by row)."""
    rng = random.Random(seed)  # test data, not security
    blobs = _Blobs(rng)
    now = datetime.now(UTC)
    fill = Fill(other_domains=other_domains)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS)
    copy_sql = sql.SQL("COPY cvms ({}) FROM STDIN (FORMAT BINARY)").format(columns)
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = 'cvms'"
            " AND indexname NOT IN"
            " (SELECT conname FROM pg_constraint WHERE conrelid = 'cvms'::regclass)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.set_types([type_name for _, type_name in COLUMNS])
            for row in _cvm_rows(rng, blobs, now, MAIN_DOMAIN, cvms, fill, main=True):
                copy.write_row(row)
            for number in range(other_domains):
                domain_id = f"org-{number:04d}-{rng.choice(TEAMS).lower()}"
                count = rng.randint(*PER_OTHER_DOMAIN)
                for row in _cvm_rows(rng, blobs, now, domain_id, count, fill, main=False):
                    copy.write_row(row)
        for _, definition in indexes:
            conn.execute(sql.SQL(definition))
        conn.commit()
    fill.seconds = time.perf_counter() - started
    return fill


def run_sql_file(conninfo: str, path: Path) -> list[str]:
    """Each ';'-terminated statement of the file, one by one, in autocommit mode (so that
    CREATE INDEX CONCURRENTLY, VACUUM and the like are allowed)."""
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
    )
    statements = [part.strip() for part in text.split(";") if part.strip()]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(sql.SQL(statement))
    return statements


def vacuum_analyze(conninfo: str) -> float:
    """What autovacuum would have done on a store that has been running a while."""
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) cvms")
    return time.perf_counter() - started


# --- The database ----------------------------------------------------------------------


def libpq_conninfo(url: URL) -> str:
    """The SQLAlchemy URL as a libpq URI psycopg accepts."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def drop_database(admin: str, name: str) -> None:
    """Drop it even while connections remain (PostgreSQL 13+)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def recreate_database(admin: str, name: str) -> None:
    drop_database(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def postgres_facts(conninfo: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    with psycopg.connect(conninfo) as conn:
        for setting in ("server_version", "shared_buffers", "work_mem", "jit"):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            facts[setting] = str(row[0]) if row else ""
        row = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('cvms'))").fetchone()
        facts["cvms_total_size"] = str(row[0]) if row else ""
    return facts


# --- The server ------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """Our environment without PRISM_BACKENDS_* settings, so only our flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prism_backends", *args]


def run_cli(*args: str) -> str:
    done = subprocess.run(
        _cli(*args), capture_output=True, text=True, env=_child_env(), timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"prism-backends {args[0]} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``prism-backends serve`` in a subprocess of its own session."""

    def __init__(self, database_url: str, data_dir: Path, log_level: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            _cli(
                "serve",
                "--database-url",
                database_url,
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                log_level,
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited {self.process.returncode}:\n{self.log_tail()}"
                    )
                with suppress(httpx.HTTPError):
                    if client.get(f"{BASE_PATH}/health").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


# --- The requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    params: dict[str, str] | None = None
    body: bytes | None = None
    expect: int = 200


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    next_call: Callable[[], Call]


@dataclass
class Result:
    operation: str
    n: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    req_per_s: float
    seconds: float
    statuses: dict[str, int]
    first_error: str | None = None


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


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def measure(
    client: httpx.AsyncClient,
    operation: Operation,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    warmup: int,
) -> Result:
    for _ in range(warmup):
        call = operation.next_call()
        await client.request(call.method, call.path, params=call.params, content=call.body)

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors = 0
    first_error: str | None = None
    issued = 0
    started = time.perf_counter()
    stop_at = started + max_seconds

    async def worker() -> None:
        nonlocal issued, errors, first_error
        while issued < requests and time.perf_counter() < stop_at:
            issued += 1
            call = operation.next_call()
            sent = time.perf_counter()
            try:
                response = await client.request(
                    call.method, call.path, params=call.params, content=call.body
                )
            except httpx.HTTPError as exc:
                outcome, detail = "exception", f"{type(exc).__name__}: {exc}"
            else:
                outcome, detail = str(response.status_code), response.text[:300]
            latencies.append(time.perf_counter() - sent)
            statuses[outcome] += 1
            if outcome != str(call.expect):
                errors += 1
                first_error = first_error or f"{outcome} {detail}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return Result(
        operation=operation.name,
        n=len(ordered),
        errors=errors,
        p50_ms=ms(percentile(ordered, 0.50)),
        p99_ms=ms(percentile(ordered, 0.99)),
        mean_ms=ms(sum(ordered) / len(ordered) if ordered else None),
        max_ms=ms(ordered[-1] if ordered else None),
        req_per_s=round(len(ordered) / elapsed, 1) if elapsed > 0 else 0.0,
        seconds=round(elapsed, 2),
        statuses=dict(statuses),
        first_error=first_error,
    )


async def measure_all(
    base: str, token: str, ops: list[Operation], args: argparse.Namespace
) -> list[Result]:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    results = []
    # SIGTERM cancels the run, as asyncio.run does on Ctrl-C, so that the requests and
    # connections wind down before main() cleans up; an exception raised by a signal
    # handler in the middle of the event loop can leave it waiting forever instead.
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    assert this is not None
    loop.add_signal_handler(signal.SIGTERM, this.cancel)
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


# --- Output ----------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = f"{'operation':<24} {'n':>6} {'errors':>6} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.operation:<24} {r.n:>6} {r.errors:>6} {number(r.p50_ms):>9} "
            f"{number(r.p99_ms):>9} {r.req_per_s:>8.1f}"
        )
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: list[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(document, indent=2) + "\n")


# --- Main ------------------------------------------------------------------------------


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
    url = make_url(args.database_url)
    if not url.drivername.startswith("postgresql") or not url.database:
        parser.error("--database-url must be a PostgreSQL URL with a database name")
    if "bench" not in url.database:
        parser.error(f"refusing to drop database {url.database!r}: its name must contain 'bench'")
    return args


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    # Cleanup runs on SIGTERM and on Ctrl-C, even when started with SIGINT ignored
    # (as a background job of a script is).
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    url = make_url(args.database_url)
    database = str(url.database)
    database_url = url.render_as_string(hide_password=False)
    conninfo = libpq_conninfo(url)
    admin = libpq_conninfo(url.set(database=args.admin_database))

    # The directory goes last: the server writes its log there until stopped.
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp, ExitStack() as cleanup:
        data_dir = Path(tmp)
        print(f"database {database}: drop, create, migrate", flush=True)
        recreate_database(admin, database)
        if not args.keep_database:
            cleanup.callback(drop_database, admin, database)
        else:
            cleanup.callback(print, f"kept database {database} ({database_url})")
        run_cli("migrate", "--database-url", database_url, "--data-dir", str(data_dir))

        total = args.cvms + args.other_domains * sum(PER_OTHER_DOMAIN) // 2
        print(f"filling about {total:,} CVMs ...", flush=True)
        fill = fill_database(
            conninfo, cvms=args.cvms, other_domains=args.other_domains, seed=args.seed
        )
        after_fill = run_sql_file(conninfo, args.after_fill_sql) if args.after_fill_sql else []
        if after_fill:
            print(f"ran {len(after_fill)} statements of {args.after_fill_sql}", flush=True)
        fill.vacuum_seconds = vacuum_analyze(conninfo)
        print(
            f"filled in {fill.seconds:.1f}s (+ VACUUM ANALYZE {fill.vacuum_seconds:.1f}s): "
            f"{MAIN_DOMAIN}: {fill.main_live:,} live + {fill.main_deleted:,} deleted; "
            f"{fill.other_domains:,} other domains: {fill.other_rows:,} CVMs",
            flush=True,
        )

        token = run_cli("token", "issue", "--domain", MAIN_DOMAIN, "--data-dir", str(data_dir))
        server = Server(database_url, data_dir, args.server_log_level)
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
            signal.signal(signal.SIGTERM, _raise_on_sigterm)
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
