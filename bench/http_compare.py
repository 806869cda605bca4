"""The service beside its anchor (bench/anchor.py), route by route, on one filled store.

    uv run python -m bench.http_compare                    # PostgreSQL, 100,000 + 1,000 domains
    uv run python -m bench.http_compare --store sqlite
    uv run python -m bench.http_compare --store both --cvms 20000 --other-domains 200

Both servers run at once on the same store (the anchor sends the service's own
statements: tests/bench/test_anchor.py checks it), and wrk drives one at a time: for
each of ``--rounds`` rounds, every route on each server in turn (which goes first
alternates), ``--seconds`` each, ``--connections`` connections. Per route it prints,
over the rounds, the median requests per second of each and their ratio, each's p99,
its CPU per request (the server process, all threads) and PostgreSQL's CPU per request
(every postgres process on the machine: the store is local).

The machine should be otherwise idle; wrk shares it with the servers. ``--ours-path``
runs another checkout's service (its ``src``) against the same anchor, for a before and
after on one machine, while both are at the same schema revision (the store is migrated
by this checkout); across a migration, run each checkout's own copy of this benchmark
(``PYTHONPATH=<checkout>/src:<checkout>``). It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cvm_fill import (
    MAIN_DOMAIN,
    NAME_QUERIES,
    Fill,
    approximate_rows,
    describe_fill,
    fill_database,
    fill_sqlite,
)
from bench.harness import (
    BASE_PATH,
    CLOCK_TICKS,
    BenchStore,
    Server,
    bench_store,
    child_env,
    cpu_ticks,
    exit_cleanly_on_signals,
    main_guard,
    postgres_seconds_since,
    postgres_ticks,
    run_cli,
    serve_argv,
    started,
    vacuum_analyze,
    write_json,
)
from bench.wrk import WrkRun, lua_script, require_wrk, run_wrk

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench_compare"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "http_compare.json"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Route:
    name: str
    kind: str  # a bench.wrk request kind
    queries: tuple[str, ...] = ()


def routes(fill: Fill) -> list[Route]:
    deep = fill.main_live * 3 // 4
    return [
        Route("view", "view"),
        Route("list", "rotate", ("",)),
        Route("list limit=100", "rotate", ("limit=100",)),
        Route("list name=<substring>", "rotate", tuple(f"name={q}" for q in NAME_QUERIES)),
        Route("list status=running", "rotate", ("status=running",)),
        Route("list cc_platform=tdx", "rotate", ("cc_platform=tdx",)),
        Route("list days=7", "rotate", ("days=7",)),
        Route("list status=inactive", "rotate", ("status=inactive",)),
        Route("list offset=<deep>", "rotate", tuple(f"offset={deep + i * 37}" for i in range(50))),
        Route("create", "create"),
    ]


@dataclass
class Sample:
    run: WrkRun
    cpu_seconds: float
    postgres_seconds: float


@dataclass
class Side:
    samples: list[Sample] = field(default_factory=list)

    def median(self, what: str) -> float:
        values = [_figure(sample, what) for sample in self.samples]
        return statistics.median(values) if values else 0.0


def _figure(sample: Sample, what: str) -> float:
    requests = max(sample.run.requests, 1)
    return {
        "req_per_s": sample.run.per_second,
        "p50_ms": sample.run.p50_ms,
        "p99_ms": sample.run.p99_ms,
        "cpu_ms_per_request": 1000 * sample.cpu_seconds / requests,
        "postgres_ms_per_request": 1000 * sample.postgres_seconds / requests,
        "errors": float(sample.run.errors),
    }[what]


def measure(
    server: Server,
    route: Route,
    script: Path,
    *,
    token: str,
    ids_file: Path,
    args: argparse.Namespace,
) -> Sample:
    server.check_alive()
    before_cpu, before_pg = cpu_ticks(server.process.pid), postgres_ticks()
    run = run_wrk(
        server.base,
        script,
        token=token,
        ids_file=ids_file if route.kind == "view" else None,
        run_id=uuid.uuid4().hex[:10],
        seconds=args.seconds,
        connections=args.connections,
        threads=args.threads,
    )
    cpu = (cpu_ticks(server.process.pid) - before_cpu) / CLOCK_TICKS
    return Sample(run, cpu, postgres_seconds_since(before_pg))


def fill_store(store: BenchStore, args: argparse.Namespace) -> Fill:
    print(f"filling about {approximate_rows(args.cvms, args.other_domains):,} CVMs ...", flush=True)
    if store.conninfo is not None:
        fill = fill_database(
            store.conninfo, cvms=args.cvms, other_domains=args.other_domains, seed=1
        )
        fill.vacuum_seconds = vacuum_analyze(store.conninfo)
    else:
        assert store.sqlite_path is not None
        fill = fill_sqlite(
            store.sqlite_path, cvms=args.cvms, other_domains=args.other_domains, seed=1
        )
    print(describe_fill(fill), flush=True)
    return fill


def compare_on(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"prism-compare-{kind}-") as tmp,
        ExitStack() as cleanup,
    ):
        data_dir = Path(tmp)
        store = cleanup.enter_context(
            bench_store(kind, data_dir, database_url=args.database_url, keep=False)
        )
        fill = fill_store(store, args)
        token = run_cli(
            "token", "issue", "--domain", MAIN_DOMAIN, "--data-dir", str(data_dir)
        ).strip()
        ids_file = data_dir / "ids.txt"
        ids_file.write_text("\n".join(fill.main_live_ids) + "\n")

        ours_env = child_env(PYTHONPATH=str(args.ours_path / "src")) if args.ours_path else None
        ours = Server(
            store.url,
            data_dir,
            "warning",
            argv=lambda port: serve_argv(store.url, data_dir, port, "warning"),
            name="ours",
            env=ours_env,
        )
        cleanup.enter_context(started(ours))
        anchor = Server(
            store.url,
            data_dir,
            "warning",
            argv=lambda port: [
                sys.executable,
                "-m",
                "bench.anchor",
                "--database-url",
                store.url,
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            name="anchor",
            env=child_env(PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'src'}"),
        )
        cleanup.enter_context(started(anchor))

        cvms_path = f"{BASE_PATH}/{MAIN_DOMAIN}/cvms"
        plan = [route for route in routes(fill) if not args.route or route.name in args.route]
        scripts = {}
        for route in plan:
            script = (
                data_dir / f"{route.name.replace(' ', '_').replace('<', '').replace('>', '')}.lua"
            )
            script.write_text(lua_script(route.kind, cvms_path, list(route.queries)))
            scripts[route.name] = script
        sides = {route.name: {"ours": Side(), "anchor": Side()} for route in plan}
        for round_number in range(args.rounds):
            print(f"{kind}: round {round_number + 1}/{args.rounds}", flush=True)
            for route in plan:
                order = [("ours", ours), ("anchor", anchor)]
                if round_number % 2:
                    order.reverse()
                for label, server in order:
                    sample = measure(
                        server,
                        route,
                        scripts[route.name],
                        token=token,
                        ids_file=ids_file,
                        args=args,
                    )
                    sides[route.name][label].samples.append(sample)
                    print(
                        f"  {route.name:<24} {label:<6} {sample.run.per_second:8.1f} req/s"
                        f"  p99 {sample.run.p99_ms:7.1f} ms  errors {sample.run.errors}",
                        flush=True,
                    )
        return {
            "store": kind,
            "fill": {
                "main_live": fill.main_live,
                "main_deleted": fill.main_deleted,
                "other_domains": fill.other_domains,
                "other_rows": fill.other_rows,
            },
            "routes": [summary(route.name, sides[route.name]) for route in plan],
        }


FIGURES = (
    "req_per_s",
    "p50_ms",
    "p99_ms",
    "cpu_ms_per_request",
    "postgres_ms_per_request",
    "errors",
)


def summary(name: str, pair: dict[str, Side]) -> dict[str, Any]:
    ours, anchor = pair["ours"], pair["anchor"]
    row: dict[str, Any] = {"route": name}
    for what in FIGURES:
        row[f"ours_{what}"] = round(ours.median(what), 2)
        row[f"anchor_{what}"] = round(anchor.median(what), 2)
    row["ratio"] = (
        round(row["ours_req_per_s"] / row["anchor_req_per_s"], 2)
        if row["anchor_req_per_s"]
        else 0.0
    )
    return row


def table(result: dict[str, Any]) -> str:
    header = (
        f"{'route':<24} {'ours/s':>8} {'anchor/s':>9} {'ratio':>6} {'p99 ours':>9} {'p99 anch':>9}"
        f" {'CPU ms ours':>11} {'anchor':>7} {'PG ms ours':>10} {'anchor':>7} {'errors':>7}"
    )
    lines = [f"store: {result['store']}", header, "-" * len(header)]
    for row in result["routes"]:
        lines.append(
            f"{row['route']:<24} {row['ours_req_per_s']:>8.1f} {row['anchor_req_per_s']:>9.1f}"
            f" {row['ratio']:>5.2f}x {row['ours_p99_ms']:>9.1f} {row['anchor_p99_ms']:>9.1f}"
            f" {row['ours_cpu_ms_per_request']:>11.2f} {row['anchor_cpu_ms_per_request']:>7.2f}"
            f" {row['ours_postgres_ms_per_request']:>10.2f}"
            f" {row['anchor_postgres_ms_per_request']:>7.2f}"
            f" {int(row['ours_errors'] + row['anchor_errors']):>7}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--store", choices=("postgres", "sqlite", "both"), default="postgres")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL database of the benchmark, DROPPED and recreated; its name must "
        "contain 'bench' (default: %(default)s)",
    )
    parser.add_argument("--cvms", type=int, default=100_000, help="CVMs in the main domain")
    parser.add_argument(
        "--other-domains", type=int, default=1_000, help="other domains, 10-50 CVMs each"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs of every route")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument(
        "--ours-path",
        type=Path,
        help="a checkout whose service to run as 'ours' (e.g. a git worktree of the "
        "previous commit); the anchor is always this checkout's",
    )
    parser.add_argument(
        "--route",
        action="append",
        choices=[route.name for route in routes(Fill())],
        help="only this route (repeat for more; default: every route)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    if min(args.cvms, args.rounds, args.connections, args.threads) < 1 or args.seconds < 1:
        parser.error("--cvms, --rounds, --connections, --threads and --seconds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_wrk()
    exit_cleanly_on_signals()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    kinds = ["postgres", "sqlite"] if args.store == "both" else [args.store]
    results = [compare_on(kind, args) for kind in kinds]
    for result in results:
        print()
        print(table(result))
    meta = {
        "benchmark": "http_compare",
        "started_at": started_at,
        "ours": str(args.ours_path or REPO),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "figures": "medians over the rounds; CPU per request: the server process's user + "
        "system time over the requests it answered",
    }
    write_json(args.output, meta, results)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    main_guard(main)
