"""The CVM population the HTTP benchmarks fill a store with: ``--cvms`` CVMs in one
domain and 10-50 in each of ``--other-domains`` others, as wide as production rows
(attestation reports and tokens of real sizes), ``created_at`` over 90 days, about 12 %
deleted. PostgreSQL is filled with one binary COPY, SQLite with one transaction of
``executemany``; the same seed gives the same rows on both.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from prism_backends.cvms import tally
from prism_backends.db.engine import make_engine, make_session_factory, unit_of_work

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


def _all_rows(
    rng: random.Random, *, cvms: int, other_domains: int, fill: Fill
) -> Iterator[tuple[Any, ...]]:
    blobs = _Blobs(rng)
    now = datetime.now(UTC)
    yield from _cvm_rows(rng, blobs, now, MAIN_DOMAIN, cvms, fill, main=True)
    for number in range(other_domains):
        domain_id = f"org-{number:04d}-{rng.choice(TEAMS).lower()}"
        count = rng.randint(*PER_OTHER_DOMAIN)
        yield from _cvm_rows(rng, blobs, now, domain_id, count, fill, main=False)


def fill_database(conninfo: str, *, cvms: int, other_domains: int, seed: int) -> Fill:
    """PostgreSQL: COPY the rows in one transaction, with the secondary indexes dropped
    meanwhile and then recreated from their own definitions (the bulk-load practice:
    building an index once is several times faster than updating it row by row)."""
    rng = random.Random(seed)  # test data, not security
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
            for row in _all_rows(rng, cvms=cvms, other_domains=other_domains, fill=fill):
                copy.write_row(row)
        for _, definition in indexes:
            conn.execute(sql.SQL(definition))
        conn.commit()
    fill.seconds = time.perf_counter() - started
    return fill


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME: naive UTC text, microseconds always written.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def fill_sqlite(path: Path, *, cvms: int, other_domains: int, seed: int) -> Fill:
    """SQLite: the same rows as ``fill_database`` for the same seed, in one transaction,
    then ANALYZE (what a long-running store's ``PRAGMA optimize`` would have gathered).
    The tally's row per inserted CVM (SQLite's triggers are per row) is folded, as the
    service's housekeeping would within its first period."""
    rng = random.Random(seed)  # test data, not security
    fill = Fill(other_domains=other_domains)
    names = ", ".join(name for name, _ in COLUMNS)
    marks = ", ".join("?" for _ in COLUMNS)
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                f"INSERT INTO cvms ({names}) VALUES ({marks})",
                (
                    tuple(_sqlite_value(v) for v in row)
                    for row in _all_rows(rng, cvms=cvms, other_domains=other_domains, fill=fill)
                ),
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            tally.fold(session)
    finally:
        engine.dispose()
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


def approximate_rows(cvms: int, other_domains: int) -> int:
    return cvms + other_domains * sum(PER_OTHER_DOMAIN) // 2


def describe_fill(fill: Fill) -> str:
    vacuum = f" (+ VACUUM ANALYZE {fill.vacuum_seconds:.1f}s)" if fill.vacuum_seconds else ""
    return (
        f"filled in {fill.seconds:.1f}s{vacuum}: "
        f"{MAIN_DOMAIN}: {fill.main_live:,} live + {fill.main_deleted:,} deleted; "
        f"{fill.other_domains:,} other domains: {fill.other_rows:,} CVMs"
    )
