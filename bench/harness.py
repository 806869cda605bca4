"""What every benchmark here shares: its own database (created, migrated, dropped),
processes it starts and stops (the service, the anchor), the load it drives (httpx or
wrk), CPU and memory read from /proc, percentiles, tables, and clean-up on Ctrl-C and
SIGTERM.

A benchmark builds on these and keeps only what it measures.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

BASE_PATH = "/backends"


# --- Clean-up on signals ---------------------------------------------------------------


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_signals() -> None:
    """SIGTERM raises SystemExit and Ctrl-C KeyboardInterrupt, so that ``with`` blocks and
    ExitStack callbacks (stop the servers, drop the database) run; also when started with
    SIGINT ignored, as a script's background job is."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


def checked_bench_url(raw: str) -> URL:
    """A PostgreSQL URL whose database may be dropped: its name must contain 'bench'."""
    url = make_url(raw)
    if not url.drivername.startswith("postgresql") or not url.database:
        raise SystemExit("--database-url must be a PostgreSQL URL with a database name")
    if "bench" not in url.database:
        raise SystemExit(
            f"refusing to drop database {url.database!r}: its name must contain 'bench'"
        )
    return url


@dataclass(frozen=True)
class BenchStore:
    """A store of the benchmark's own: ``url`` for the service, ``conninfo`` for psycopg
    (PostgreSQL only), ``sqlite_path`` for sqlite3 (SQLite only)."""

    url: str
    conninfo: str | None = None
    sqlite_path: Path | None = None

    @property
    def is_postgres(self) -> bool:
        return self.conninfo is not None


@contextmanager
def bench_store(
    kind: str,
    data_dir: Path,
    *,
    database_url: str,
    admin_database: str = "postgres",
    keep: bool = False,
) -> Iterator[BenchStore]:
    """A fresh, migrated store: PostgreSQL (the database of ``database_url`` dropped and
    recreated, and dropped again afterwards unless ``keep``) or SQLite (a file in
    ``data_dir``)."""
    if kind == "sqlite":
        path = data_dir / "prism-backends.db"
        store = BenchStore(url=f"sqlite:///{path}", sqlite_path=path)
        run_cli("migrate", "--database-url", store.url, "--data-dir", str(data_dir))
        yield store
        return
    url = checked_bench_url(database_url)
    admin = libpq_conninfo(url.set(database=admin_database))
    name = str(url.database)
    recreate_database(admin, name)
    try:
        store = BenchStore(
            url=url.render_as_string(hide_password=False), conninfo=libpq_conninfo(url)
        )
        run_cli("migrate", "--database-url", store.url, "--data-dir", str(data_dir))
        yield store
    finally:
        if keep:
            print(f"kept database {name} ({url.render_as_string(hide_password=True)})")
        else:
            drop_database(admin, name)


def vacuum_analyze(conninfo: str, table: str = "cvms") -> float:
    """What autovacuum would have done on a store that has been running a while."""
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    return time.perf_counter() - started


def postgres_facts(conninfo: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    with psycopg.connect(conninfo) as conn:
        for setting in ("server_version", "shared_buffers", "work_mem", "jit"):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
            facts[setting] = str(row[0]) if row else ""
        row = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('cvms'))").fetchone()
        facts["cvms_total_size"] = str(row[0]) if row else ""
    return facts


# --- Processes -------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without PRISM_BACKENDS_* settings, so only our flags count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prism_backends", *args]


def run_cli(*args: str) -> str:
    done = subprocess.run(
        cli(*args), capture_output=True, text=True, env=child_env(), timeout=300, check=False
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


def serve_argv(database_url: str, data_dir: Path, port: int, log_level: str) -> list[str]:
    """``prism-backends serve`` on the benchmark's store and port."""
    return cli(
        "serve",
        "--database-url",
        database_url,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        log_level,
    )


class Server:
    """An HTTP server in a subprocess of its own session (Ctrl-C reaches us, and we stop
    it in order): by default ``prism-backends serve``, or any ``argv`` that listens on
    ``port`` and answers ``ready_path``."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_level: str,
        *,
        argv: Callable[[int], list[str]] | None = None,
        name: str = "server",
        env: dict[str, str] | None = None,
        ready_path: str = f"{BASE_PATH}/health",
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.ready_path = ready_path
        self.log_path = data_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        command = (
            argv(self.port)
            if argv is not None
            else serve_argv(database_url, data_dir, self.port, log_level)
        )
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env if env is not None else child_env(),
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, timeout=2.0) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                with suppress(httpx.HTTPError):
                    if client.get(self.ready_path).status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.log_tail()}")

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


@contextmanager
def started(server: Server, cleanup: ExitStack | None = None) -> Iterator[Server]:
    """The server, ready; stopped on leaving (or by ``cleanup``, when given)."""
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    if cleanup is not None:
        cleanup.callback(server.stop)
        yield server
        return
    try:
        yield server
    finally:
        server.stop()


# --- /proc -----------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM ...)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


def postgres_ticks() -> dict[int, int]:
    """CPU ticks of every PostgreSQL process on this machine (the store is local)."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != "postgres":
                    continue
            found[int(entry)] = cpu_ticks(int(entry))
    return found


def postgres_seconds_since(before: dict[int, int]) -> float:
    """CPU seconds PostgreSQL spent since ``before`` (backends that came and went count
    from zero)."""
    after = postgres_ticks()
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


# --- Load ------------------------------------------------------------------------------


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


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


async def measure(
    client: httpx.AsyncClient,
    operation: Operation,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    warmup: int,
) -> Result:
    """``warmup`` calls unmeasured, then up to ``requests`` calls or ``max_seconds``, with
    ``concurrency`` in flight."""
    for _ in range(warmup):
        call = operation.next_call()
        await client.request(call.method, call.path, params=call.params, content=call.body)

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors = 0
    first_error: str | None = None
    issued = 0
    started_at = time.perf_counter()
    stop_at = started_at + max_seconds

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
    elapsed = time.perf_counter() - started_at
    ordered = sorted(latencies)
    return Result(
        operation=operation.name,
        n=len(ordered),
        errors=errors,
        p50_ms=_ms(percentile(ordered, 0.50)),
        p99_ms=_ms(percentile(ordered, 0.99)),
        mean_ms=_ms(sum(ordered) / len(ordered) if ordered else None),
        max_ms=_ms(ordered[-1] if ordered else None),
        req_per_s=round(len(ordered) / elapsed, 1) if elapsed > 0 else 0.0,
        seconds=round(elapsed, 2),
        statuses=dict(statuses),
        first_error=first_error,
    )


def cancel_on_sigterm() -> Callable[[], None]:
    """Inside a running event loop: SIGTERM cancels the current task, as asyncio.run does
    on Ctrl-C, so requests and connections wind down before the caller cleans up (an
    exception raised by a signal handler mid-loop can leave it waiting forever). Returns
    the undo."""
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    assert this is not None
    loop.add_signal_handler(signal.SIGTERM, this.cancel)

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGTERM)

    return undo


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


def write_json(path: Path, meta: dict[str, Any], results: Sequence[Any]) -> None:
    """``results`` are dataclasses (or already dicts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r if isinstance(r, dict) else asdict(r) for r in results]
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


def main_guard(main: Callable[[], int]) -> None:
    """``sys.exit(main())``, with Ctrl-C reported as cleaned up rather than a traceback."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
