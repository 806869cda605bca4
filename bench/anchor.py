"""The yardstick of the HTTP benchmarks: a bare Starlette app on the same uvicorn as the
service that answers view, list and create as the service does, with nothing else.

    python -m bench.anchor --database-url URL --data-dir DIR --port N

For each request it verifies the same EdDSA bearer token (PyJWT, the service's key and
claims), sends exactly the statements the service sends (the driver's own calls: psycopg
or sqlite3, no SQLAlchemy), and renders byte-identical JSON (``json.dumps`` of a dict).
``tests/bench/test_anchor.py`` holds it to that, statement for statement, on both
stores. What is not framework work it shares with the service: the price table, and
the agent's client certificate (the CA signs one per create, in both).

It checks only what the benchmark sends: it answers 401 to a bad token and 404 to an
unknown CVM, and is not an API anyone should use.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import queue
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prism_backends.auth.keys import load_or_create_issuer_key
from prism_backends.config import Settings
from prism_backends.cvms.models import CVM
from prism_backends.cvms.repository import SHOWN_COLUMNS
from prism_backends.db.engine import SQLITE_BUSY_TIMEOUT_MS, sqlite_begin
from prism_backends.heap import settle_heap
from prism_backends.pricing.table import estimate_cents
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import Platform

BASE_PATH = "/backends"
ALL_COLUMNS = tuple(column.name for column in CVM.__table__.columns)
PAGE_COLUMNS = SHOWN_COLUMNS  # what the wire form shows
VIEW_COLUMNS = (*SHOWN_COLUMNS, "attestation")
NEWEST_FIRST = "ORDER BY cvms.created_at DESC, cvms.id DESC"
LIVE = "cvms.deleted_at IS NULL"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


Statement = tuple[str, Sequence[Any]]


def _select(columns: Sequence[str]) -> str:
    return "SELECT " + ", ".join(f"cvms.{name}" for name in columns) + " FROM cvms"


VIEW_SQL = f"{_select(VIEW_COLUMNS)} WHERE cvms.domain_id = ? AND cvms.id = ? AND {LIVE}"
NAME_TAKEN_SQL = f"SELECT cvms.id FROM cvms WHERE cvms.domain_id = ? AND cvms.name = ? AND {LIVE}"
# SQLAlchemy spells a LIMIT without OFFSET so on PostgreSQL; SQLite's grammar wants both.
NAME_TAKEN = {
    True: (f"{NAME_TAKEN_SQL} LIMIT ?", (1,)),
    False: (f"{NAME_TAKEN_SQL} LIMIT ? OFFSET ?", (1, 0)),
}
INSERT_CVM_SQL = (
    f"INSERT INTO cvms ({', '.join(ALL_COLUMNS)}) VALUES ({', '.join('?' for _ in ALL_COLUMNS)})"
)
CREDENTIAL_COLUMNS = (
    "cvm_id",
    "serial",
    "cert_pem",
    "sealed_key",
    "not_before",
    "not_after",
    "revoked_at",
    "presented_at",
    "expiry_warned_at",
)
INSERT_CREDENTIAL_SQL = (
    f"INSERT INTO agent_credentials ({', '.join(CREDENTIAL_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in CREDENTIAL_COLUMNS)})"
)


def list_statements(
    domain_id: str,
    *,
    status: str | None,
    name: str | None,
    cc_platform: str | None,
    created_after: datetime | None,
    limit: int,
    offset: int,
) -> list[Statement]:
    """The page and its count (from the domain's tally unless a name or an age
    is asked), as the service's repository builds them."""
    where = ["cvms.domain_id = ?"]
    params: list[Any] = [domain_id]
    if status == "inactive":
        where.append("cvms.deleted_at IS NOT NULL")
    else:
        where.append(LIVE)
        if status is not None:
            where.append("cvms.status = ?")
            params.append(status)
    if name:
        where.append("(lower(cvms.name) LIKE '%' || ? || '%' ESCAPE '/')")
        escaped = name.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
        params.append(escaped)
    if cc_platform is not None:
        where.append("cvms.cc_platform = ?")
        params.append(cc_platform)
    if created_after is not None:
        where.append("cvms.created_at >= ?")
        params.append(created_after)
    condition = " AND ".join(where)
    page = (
        f"{_select(PAGE_COLUMNS)} WHERE cvms.domain_id = ? AND cvms.id IN"
        f" (SELECT cvms.id FROM cvms WHERE {condition} {NEWEST_FIRST} LIMIT ? OFFSET ?)"
        f" {NEWEST_FIRST}"
    )
    if name or created_after is not None:
        count = f"SELECT count(*) AS count_1 FROM cvms WHERE {condition}"
        return [(page, [domain_id, *params, limit, offset]), (count, params)]
    return [
        (page, [domain_id, *params, limit, offset]),
        tally_statement(domain_id, status, cc_platform),
    ]


def tally_statement(domain_id: str, status: str | None, cc_platform: str | None) -> Statement:
    where = ["cvm_tallies.domain_id = ?", "cvm_tallies.live = ?"]
    params: list[Any] = [domain_id, status != "inactive"]
    if status is not None and status != "inactive":
        where.append("cvm_tallies.status = ?")
        params.append(status)
    if cc_platform is not None:
        where.append("cvm_tallies.cc_platform = ?")
        params.append(cc_platform)
    sql = (
        "SELECT coalesce(sum(cvm_tallies.change), ?) AS coalesce_1 FROM cvm_tallies"
        f" WHERE {' AND '.join(where)}"
    )
    return sql, [0, *params]


# --- The store ---------------------------------------------------------------------------


class Store:
    """Connections of one driver, kept open and reused (one per handler thread at most)."""

    def __init__(self, url: str, trace: Callable[[str, Sequence[Any]], None] | None = None):
        self.postgres = not url.startswith("sqlite")
        self._url = url
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._trace = trace
        self._query_only: dict[int, bool] = {}  # id of a SQLite connection -> its query_only
        # As the service's SQLite writers do (db/turns.py): they take turns on a lock.
        self._writer = threading.RLock()

    def _connect(self) -> Any:
        if self.postgres:
            conninfo = self._url.replace("postgresql+psycopg://", "postgresql://", 1)
            return psycopg.connect(conninfo)
        path = self._url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "PRAGMA synchronous=NORMAL",
        ):
            conn.execute(pragma)
        self._query_only[id(conn)] = False
        return conn

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()

    @contextmanager
    def transaction(self, *, read_only: bool) -> Iterator[Callable[[str, Sequence[Any]], Any]]:
        """``run(sql, params)`` inside one transaction, committed on success."""
        if self.postgres or read_only:
            with self._transaction(read_only=read_only) as run:
                yield run
            return
        with self._writer, self._transaction(read_only=False) as run:
            yield run

    @contextmanager
    def _transaction(self, *, read_only: bool) -> Iterator[Callable[[str, Sequence[Any]], Any]]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        if self.postgres:  # psycopg sends BEGIN before the first statement
            self._note("BEGIN")
        else:  # as the service's engine begins them
            for statement in sqlite_begin(read_only, self._query_only[id(conn)]):
                self._send(conn, statement)
            self._query_only[id(conn)] = read_only

        def run(sql: str, params: Sequence[Any]) -> Any:
            return self._send(conn, sql, params)

        try:
            yield run
            if self.postgres:
                self._note("COMMIT")
                conn.commit()
            else:
                self._send(conn, "COMMIT")
        except BaseException:
            if self.postgres:
                self._note("ROLLBACK")
                conn.rollback()
            else:
                self._send(conn, "ROLLBACK")
            raise
        finally:
            self._idle.put(conn)

    def _note(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self._trace is not None:
            self._trace(sql, params)

    def _send(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.postgres:
            sql = sql.replace("%", "%%").replace("?", "%s")
        elif params:
            params = [_sqlite_value(value) for value in params]
        self._note(sql, params)
        return conn.execute(sql, params)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- Rendering ---------------------------------------------------------------------------


def _time(value: Any) -> str:
    moment = _utc(value)
    return "0001-01-01T00:00:00Z" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def render(row: dict[str, Any], *, with_evidence: bool) -> dict[str, Any]:
    evidence = row.get("attestation") if with_evidence else None
    cents = row["monthly_cost_cents"]
    return {
        "id": row["id"],
        "name": row["name"],
        "cvm_id": row["cvm_id"],
        "agent_url": row["agent_url"],
        "status": row["status"],
        "state": row["state"],
        "created_at": _time(row["created_at"]),
        "deleted_at": _time(row["deleted_at"]),
        "provider": row["provider"],
        "vcpus": row["vcpus"],
        "attestation": base64.b64encode(evidence).decode() if evidence else "",
        "attestation_token": row["attestation_token"],
        "agent_log_level": row["agent_log_level"],
        "monthly_cost_estimate": f"${cents // 100}.{cents % 100:02d}",
        "cc_platform": row["cc_platform"],
        "domain_id": row["domain_id"],
        "error": row["error"],
        "attestation_error": row["attestation_error"],
        "updated_at": _time(row["updated_at"]),
    }


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode(), status, headers, media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return json_response({"error": code, "message": message}, status)


# --- The app -----------------------------------------------------------------------------


def create_anchor(
    settings: Settings, trace: Callable[[str, Sequence[Any]], None] | None = None
) -> Starlette:
    runtime = Runtime(settings)
    store = Store(settings.effective_database_url, trace)
    public_key = load_or_create_issuer_key(settings.data_dir).public_key()
    credentials = runtime.credentials
    prices = runtime.prices
    catalog = runtime.catalog

    def domain_of(request: Request) -> str | None:
        """The path's domain if the token grants it, else None."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["EdDSA"],
                issuer=settings.jwt_issuer,
                audience="prism-backends",
                options={"require": ["exp", "sub", "aud"]},
                leeway=5,
            )
        except jwt.PyJWTError:
            return None
        domain_id = request.path_params["domain_id"]
        return (
            domain_id if scheme.lower() == "bearer" and claims.get("domain") == domain_id else None
        )

    def view(request: Request) -> Response:
        domain_id = domain_of(request)
        if domain_id is None:
            return _error(401, "unauthenticated", "bad token")
        cvm_id = request.path_params["cvm_id"]
        try:
            if not _UUID.fullmatch(cvm_id):
                raise LookupError
            with store.transaction(read_only=True) as run:  # rolled back when not found
                row = _one(run(VIEW_SQL, (domain_id, cvm_id)), VIEW_COLUMNS)
                if row is None:
                    raise LookupError
        except LookupError:
            return _error(404, "not_found", f"no CVM {cvm_id!r} in domain {domain_id!r}")
        return json_response(render(row, with_evidence=True))

    def list_page(request: Request) -> Response:
        domain_id = domain_of(request)
        if domain_id is None:
            return _error(401, "unauthenticated", "bad token")
        query = request.query_params
        limit, offset = int(query.get("limit", 10)), int(query.get("offset", 0))
        days = query.get("days")
        created_after = datetime.now(UTC) - timedelta(days=int(days)) if days else None
        page, count = list_statements(
            domain_id,
            status=query.get("status"),
            name=query.get("name"),
            cc_platform=query.get("cc_platform"),
            created_after=created_after,
            limit=limit,
            offset=offset,
        )
        with store.transaction(read_only=True) as run:
            rows = [dict(zip(PAGE_COLUMNS, r, strict=True)) for r in run(*page).fetchall()]
            total = int(run(*count).fetchone()[0])  # PostgreSQL sums a bigint as numeric
        cvms = [render(row, with_evidence=False) for row in rows]
        return json_response({"cvms": cvms, "total": total, "limit": limit, "offset": offset})

    async def create(request: Request) -> Response:
        domain_id = domain_of(request)
        if domain_id is None:
            return _error(401, "unauthenticated", "bad token")
        body = await request.body()
        # The blocking part runs on the thread pool, as a sync route's does.
        return await run_in_threadpool(_create, domain_id, request.path_params, body)

    def _create(domain_id: str, path: dict[str, Any], body: bytes) -> Response:
        fields = json.loads(body)
        name = str(fields["name"]).strip()
        provider, platform, vcpus = (
            path["provider"],
            Platform(path["cc_platform"]),
            int(path["vcpu"]),
        )
        entry = catalog.get(provider)
        assert entry is not None
        canonical = json.dumps(
            [
                provider,
                platform.value,
                vcpus,
                {"name": name, "agent_log_level": "info", "agent_url": None},
            ],
            sort_keys=True,
        )
        now = datetime.now(UTC)
        cvm_id = str(uuid.uuid4())
        instant = entry.provider.provisions_instantly
        policy = entry.config.attestation_policies.get(platform)
        row: dict[str, Any] = {
            "id": cvm_id,
            "domain_id": domain_id,
            "name": name,
            "provider": provider,
            "cc_platform": platform.value,
            "vcpus": vcpus,
            "agent_log_level": "info",
            "agent_url": "",
            "cvm_id": cvm_id if instant else "",
            "state": "provisioned" if instant else "pending",
            "status": "starting",
            "error": "",
            "monthly_cost_cents": estimate_cents(
                prices,
                provider,
                platform.value,
                vcpus,
                catalog.price_override(provider, platform),
                catalog.price_region(provider),
            ),
            "price_table_version": prices.version,
            "attestation": None,
            "attestation_token": "",
            "attestation_policy": policy,
            "attestation_policy_source": "reference" if policy is not None else "",
            "attestation_error": "",
            "attestations_verified": 0,
            "attestations_failed": 0,
            "attested_at": None,
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
            "idempotency_key": None,
            "request_digest": hashlib.sha256(canonical.encode()).hexdigest(),
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": None if instant else now,
            "attempts": 0,
            "first_failure_at": None,
        }
        issued = credentials.ca.issue_client(cvm_id, domain_id, credentials.validity, now)
        credential = (
            cvm_id,
            format(issued.serial, "x"),
            issued.cert_pem.decode(),
            credentials.sealer.seal(issued.key_pem, bound_to=cvm_id),
            issued.not_before,
            issued.not_after,
            None,
            None,
            None,
        )
        with store.transaction(read_only=False) as run:
            taken, bounds = NAME_TAKEN[store.postgres]
            if run(taken, (domain_id, name, *bounds)).fetchone() is not None:
                return _error(
                    409, "conflict", f"a CVM named {name!r} already exists in this domain"
                )
            run(INSERT_CVM_SQL, [row[column] for column in ALL_COLUMNS])
            run(INSERT_CREDENTIAL_SQL, credential)
        location = f"{BASE_PATH}/{domain_id}/cvms/{cvm_id}"
        return json_response(render(row, with_evidence=True), 201, {"Location": location})

    def health(_request: Request) -> Response:
        return json_response({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()
        runtime.close()

    cvms = f"{BASE_PATH}/{{domain_id}}/cvms"
    return Starlette(
        lifespan=lifespan,
        routes=[
            Route(f"{BASE_PATH}/health", health),
            Route(cvms, list_page),
            Route(f"{cvms}/{{cvm_id}}", view),
            Route(f"{cvms}/{{provider}}/{{vcpu}}/{{cc_platform}}", create, methods=["POST"]),
        ],
    )


def _one(cursor: Any, columns: Sequence[str]) -> dict[str, Any] | None:
    found = cursor.fetchone()
    return None if found is None else dict(zip(columns, found, strict=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.anchor", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    settings = Settings(data_dir=args.data_dir, database_url=args.database_url)
    app = create_anchor(settings)
    settle_heap()  # as the service does once it has started
    # As the service's own (cli/main.py): the same server, event loop and HTTP parser.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level=args.log_level,
        server_header=False,
        http="httptools",
    )


if __name__ == "__main__":
    main()
