"""Reads beside writes on the embedded default (SQLite): views under load
while a writer creates CVMs, the p50/p99 of each printed.

    uv run python -m bench.sqlite_reads                 # 16 readers, 1 writer, 10 s
    uv run python -m bench.sqlite_reads --readers 32 --seconds 30

A reader that takes the write lock queues behind every create (and every
write of the workers, the agents endpoint and the sampler); one that does not
reads a snapshot beside them. The store is a fresh data directory, removed
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.harness import BASE_PATH, Server, percentile, run_cli

DOMAIN = "bench-sqlite"


async def _load(base: str, token: str, ids: list[str], args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.readers + 1)
    views: list[float] = []
    creates: list[float] = []
    failures: list[str] = []
    stop_at = time.perf_counter() + args.seconds
    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def reader() -> None:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                reply = await c.get(f"{BASE_PATH}/{DOMAIN}/cvms/{rng.choice(ids)}")
                views.append(time.perf_counter() - sent)
                if reply.status_code != 200:
                    failures.append(f"view {reply.status_code}")

        async def writer() -> None:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                reply = await c.post(
                    f"{BASE_PATH}/{DOMAIN}/cvms/external/2/sev-snp",
                    json={"name": f"w-{uuid.uuid4().hex[:12]}"},
                )
                creates.append(time.perf_counter() - sent)
                if reply.status_code != 201:
                    failures.append(f"create {reply.status_code}")

        await asyncio.gather(writer(), *(reader() for _ in range(args.readers)))
    print(f"{'operation':<8} {'n':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for name, values in (("view", views), ("create", creates)):
        ordered = sorted(values)
        p50 = (percentile(ordered, 0.5) or 0) * 1000
        p99 = (percentile(ordered, 0.99) or 0) * 1000
        rate = len(ordered) / args.seconds
        print(f"{name:<8} {len(ordered):>7} {p50:>8.1f} {p99:>8.1f} {rate:>8.1f}")
    if failures:
        print(f"failures: {len(failures)}, first: {failures[0]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=16, help="concurrent view requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to measure")
    parser.add_argument("--cvms", type=int, default=200, help="CVMs created before measuring")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prism-bench-sqlite-") as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'prism-backends.db'}"
        token = run_cli("token", "issue", "--domain", DOMAIN, "--data-dir", str(data_dir)).strip()
        server = Server(url, data_dir, "warning")
        try:
            server.wait_ready()
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
                ids = [
                    client.post(
                        f"{BASE_PATH}/{DOMAIN}/cvms/external/2/sev-snp", json={"name": f"c-{n}"}
                    ).json()["id"]
                    for n in range(args.cvms)
                ]
            print(
                f"SQLite, {args.cvms} CVMs, {args.readers} readers and 1 writer, {args.seconds:g} s"
            )
            asyncio.run(_load(server.base, token, ids, args))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
