"""Drill: the embedded default's disk fills up under it.

``serve`` runs on SQLite in a data directory on a small tmpfs of its own.
Filled to the last byte, writes must fail with 503 (and Retry-After) and a
log line, reads keep working, the service takes writes again once space
returns (no restart), and the database is intact afterwards.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served import DOMAIN, Processes, Spec, free_port

pytestmark = pytest.mark.slow

FILESYSTEM_BYTES = 8 * 1024 * 1024
LONG_NAME = "n" * 200  # each create writes a few hundred bytes: the disk fills sooner


@pytest.fixture
def small_disk(embedded: Processes) -> Iterator[Path]:
    """The data directory, on a tmpfs of FILESYSTEM_BYTES."""
    target = embedded.data_dir
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FILESYSTEM_BYTES},mode=0700", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        embedded.stop()
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    return filler


def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(
    embedded: Processes, small_disk: Path
) -> None:
    port = free_port()
    token = embedded.run("token", "issue", "--domain", DOMAIN).strip()
    base = f"http://127.0.0.1:{port}/backends"

    def serve() -> Spec:
        return Spec(
            args=["serve", "--port", str(port), "--agents-port", str(free_port())],
            ready=["HTTP API on"],
            health_url=f"{base}/health",
        )

    embedded.ready(embedded.launch("serve", serve))
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    acknowledged: list[str] = []

    def create(index: int) -> httpx.Response:
        reply = client.post(
            f"/{DOMAIN}/cvms/external/2/sev-snp", json={"name": f"{LONG_NAME}-{index}"}
        )
        if reply.status_code == 201:
            acknowledged.append(reply.json()["id"])
        return reply

    for index in range(5):
        assert create(index).status_code == 201
    filler = _fill(small_disk)

    refused = None
    for index in range(5, 3000):
        reply = create(index)
        if reply.status_code != 201:
            refused = reply
            break
    assert refused is not None, "the disk never filled"
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "store_unavailable"
    assert refused.headers["Retry-After"] == "2"

    # Reads keep working while nothing can be written.
    listed = client.get(f"/{DOMAIN}/cvms", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    assert client.get(f"/{DOMAIN}/cvms/{acknowledged[0]}").status_code == 200

    filler.unlink()
    deadline = time.monotonic() + 5
    while (reply := create(10_000)).status_code != 201:
        assert reply.status_code == 503, reply.text
        assert time.monotonic() < deadline, "writes did not come back within 5 s"
        time.sleep(0.2)

    log = embedded.log("serve-0")
    assert "store unavailable: OperationalError: database or disk is full" in log
    assert "Traceback" not in log

    everything = client.get(f"/{DOMAIN}/cvms", params={"limit": 100}).json()
    client.close()
    embedded.every["serve-0"].terminate()
    assert embedded.exit_code("serve-0", timeout=30) == 0
    database = small_disk / "prism-backends.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in connection.execute("SELECT id FROM cvms")}
    assert set(acknowledged) <= stored  # no acknowledged create was lost
    assert everything["total"] == len(acknowledged)
