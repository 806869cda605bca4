"""What one uptime sample costs the process that takes it, at scale.

    uv run python -m bench.sampler_step                  # 100,000 + ~30,000 CVMs, PostgreSQL
    uv run python -m bench.sampler_step --cvms 20000 --other-domains 100

Fills its own database (``prism_bench_sampler``, dropped and recreated) as
``bench.http_latency`` does, then runs the sampler's step (reap, claim the
slot, sample every provisioned live CVM) for ``--slots`` consecutive slots
of one day: the first writes each CVM's day row, the others update them.
Prints, per slot, the wall time and this process's CPU time: the CPU is what
the sampler takes from an API in the same process (``serve``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.cvm_fill import fill_database
from bench.harness import libpq_conninfo, recreate_database, run_cli
from prism_backends.config import Settings
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime
from prism_backends.statistics.bitmap import slot_start
from prism_backends.statistics.models import UptimeDay
from prism_backends.statistics.sampler import Sampler

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench_sampler"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--cvms", type=int, default=100_000)
    parser.add_argument("--other-domains", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=3)
    args = parser.parse_args(argv)
    url = make_url(args.database_url)
    if not url.database or "bench" not in url.database:
        parser.error("the database's name must contain 'bench' (it is dropped and recreated)")
    admin = libpq_conninfo(url.set(database="postgres"))
    recreate_database(admin, url.database)
    run_cli("migrate", "--database-url", args.database_url)
    fill = fill_database(
        libpq_conninfo(url), cvms=args.cvms, other_domains=args.other_domains, seed=1
    )
    print(f"filled in {fill.seconds:.1f} s")
    runtime = Runtime(Settings(database_url=args.database_url, stats_interval_seconds=300))
    sampler = Sampler(runtime.settings, runtime.sessions)
    start = slot_start(utcnow(), 300).replace(hour=1, minute=0)  # room for the slots in one day
    print(f"{'slot':>4} {'wall s':>8} {'cpu s':>8}")
    for number in range(args.slots):
        at = start + timedelta(seconds=300 * number)
        wall, cpu = time.perf_counter(), time.process_time()
        assert sampler.run_once(at)
        print(f"{number:>4} {time.perf_counter() - wall:>8.2f} {time.process_time() - cpu:>8.2f}")
    with unit_of_work(runtime.sessions) as session:
        rows = session.scalar(select(func.count()).select_from(UptimeDay))
    print(f"cvm_uptime_days rows: {rows}")
    runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
