"""Whether background work starves the API: view throughput, 10 s window by window,
across the uptime sampler's instants.

    uv run python -m bench.sampler_dip                     # 100,000 CVMs + 1,000 domains, 4 min
    uv run python -m bench.sampler_dip --cvms 20000 --other-domains 200 --seconds 130

Fills a PostgreSQL store (dropped and recreated) as http_compare does, starts
``prism-backends serve`` with the sampler every ``--interval`` seconds (300 by default
in production; the cost of one instant does not depend on the interval, a shorter one
only puts more instants in the run), and drives views with wrk for ``--seconds``,
counting responses per wall-clock second. It prints the throughput of each whole 10 s
window, marks the windows in which an instant was sampled (``sampled_slots``), and the
worst window against the median; JSON to bench/results/sampler_dip.json. It asserts
nothing about speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.cvm_fill import MAIN_DOMAIN, describe_fill, fill_database
from bench.harness import (
    BASE_PATH,
    Server,
    bench_store,
    exit_cleanly_on_signals,
    main_guard,
    run_cli,
    serve_argv,
    started,
    vacuum_analyze,
    write_json,
)
from bench.wrk import lua_script, run_wrk

WINDOW_SECONDS = 10
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench_dip"


def windows(per_second: dict[int, int]) -> list[tuple[int, int]]:
    """(start second, responses) of each whole window; the partial first and last
    seconds of the run are left out."""
    first, last = min(per_second) + 1, max(per_second) - 1
    starts = range(first, last - WINDOW_SECONDS + 2, WINDOW_SECONDS)
    return [
        (start, sum(per_second.get(s, 0) for s in range(start, start + WINDOW_SECONDS)))
        for start in starts
    ]


def sampled_instants(conninfo: str) -> list[tuple[float, float]]:
    """(slot, when it was sampled) of every instant taken, as Unix times."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT slot_at, sampled_at FROM sampled_slots ORDER BY 1").fetchall()
    return [(slot.timestamp(), sampled.timestamp()) for slot, sampled in rows]


def report(found: list[tuple[int, int]], instants: list[tuple[float, float]]) -> dict[str, Any]:
    rates = [count / WINDOW_SECONDS for _, count in found]
    median = statistics.median(rates)
    rows = []
    for (start, _), rate in zip(found, rates, strict=True):
        sampled = any(start <= when < start + WINDOW_SECONDS for _, when in instants)
        rows.append({"start": start, "req_per_s": rate, "sampled": sampled})
        when = datetime.fromtimestamp(start).strftime("%H:%M:%S")
        mark = "  <- an instant sampled" if sampled else ""
        print(f"  {when}  {rate:7.1f} req/s  {rate / median:5.2f}x median{mark}")
    worst = min(rates)
    sampled_rates = [row["req_per_s"] for row in rows if row["sampled"]]
    print(
        f"\nmedian window {median:.1f} req/s; worst {worst:.1f} ({worst / median:.2f}x); "
        f"windows with an instant: "
        + (", ".join(f"{rate / median:.2f}x" for rate in sampled_rates) or "none")
    )
    return {
        "median_req_per_s": median,
        "worst_req_per_s": worst,
        "worst_vs_median": worst / median,
        "sampled_windows_vs_median": [rate / median for rate in sampled_rates],
        "windows": rows,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="prism-dip-") as tmp, ExitStack() as cleanup:
        data_dir = Path(tmp)
        store = cleanup.enter_context(
            bench_store("postgres", data_dir, database_url=args.database_url, keep=False)
        )
        conninfo = store.conninfo
        assert conninfo is not None  # a PostgreSQL store
        fill = fill_database(conninfo, cvms=args.cvms, other_domains=args.other_domains, seed=1)
        fill.vacuum_seconds = vacuum_analyze(conninfo)
        print(describe_fill(fill), flush=True)
        token = run_cli(
            "token", "issue", "--domain", MAIN_DOMAIN, "--data-dir", str(data_dir)
        ).strip()
        ids_file = data_dir / "ids.txt"
        ids_file.write_text("\n".join(fill.main_live_ids) + "\n")
        interval = f"stats_interval_seconds={args.interval}"
        server = Server(
            store.url,
            data_dir,
            "warning",
            argv=lambda port: [
                *serve_argv(store.url, data_dir, port, "warning"),
                "--set",
                interval,
            ],
            name="ours",
        )
        cleanup.enter_context(started(server))
        script = data_dir / "view.lua"
        script.write_text(lua_script("view", f"{BASE_PATH}/{MAIN_DOMAIN}/cvms", per_second=True))
        print(f"views for {args.seconds:.0f}s, the sampler every {args.interval}s ...", flush=True)
        load = run_wrk(
            server.base,
            script,
            token=token,
            ids_file=ids_file,
            run_id=uuid.uuid4().hex[:8],
            seconds=args.seconds,
            connections=args.connections,
            threads=args.threads,
        )
        if not load.per_wall_second:
            raise RuntimeError("wrk counted no responses")
        return {
            "errors": load.errors,
            **report(windows(load.per_wall_second), sampled_instants(conninfo)),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sampler_dip", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="PostgreSQL database of the benchmark, DROPPED and recreated; its name must "
        "contain 'bench' (default: %(default)s)",
    )
    parser.add_argument("--cvms", type=int, default=100_000)
    parser.add_argument("--other-domains", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the load")
    parser.add_argument("--interval", type=int, default=60, help="the sampler's interval (s)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("bench/results/sampler_dip.json"))
    args = parser.parse_args()
    exit_cleanly_on_signals()
    found = run(args)
    settings = {name: str(value) for name, value in vars(args).items()}
    write_json(args.output, {"argv": sys.argv[1:], **settings}, [found])
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    main_guard(main)
