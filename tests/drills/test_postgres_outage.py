"""Drill: PostgreSQL goes away under load, and comes back.

``serve`` on PostgreSQL takes a steady load of creates, deletes and reads
while two reference agents stream heartbeats. Then its database role is cut
off: every connection it holds is terminated and new ones are refused, for
a few seconds, as a restart or failover would. During the outage requests
get 503 with Retry-After (never a 500, never a hang); within 5 s of the
database coming back the service answers again, without a restart; no
acknowledged create or delete is lost and no CVM is left stuck.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.drills.conftest import Cluster
from tests.served import (
    DOMAIN,
    Api,
    Processes,
    Spec,
    free_port,
    save_config,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 4.0
RECOVERY_SECONDS = 5.0
SETTLE_SECONDS = 20.0  # agents reconnect with backoff; teardowns finish


@dataclass
class Load:
    """A tenant hammering the API from three threads, keeping count."""

    client: httpx.Client
    stop: threading.Event = field(default_factory=threading.Event)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        try:
            reply = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            self.problems.append(f"{method} {path}: {error!r}")
            return None
        with self.lock:
            self.statuses[reply.status_code] += 1
        if reply.status_code == 503 and "Retry-After" not in reply.headers:
            self.problems.append(f"{method} {path}: 503 without Retry-After")
        if reply.status_code >= 500 and reply.status_code != 503:
            self.problems.append(f"{method} {path}: {reply.status_code} {reply.text}")
        return reply

    def until_done(self, method: str, path: str, done: set[int], **kwargs: Any) -> int | None:
        """Retry on 503 until the answer is one of ``done`` (what a careful client does)."""
        while True:
            reply = self.call(method, path, **kwargs)
            if reply is None:
                return None
            if reply.status_code in done:
                return reply.status_code
            if reply.status_code != 503:
                self.problems.append(f"{method} {path}: {reply.status_code} {reply.text}")
                return None
            time.sleep(0.1)

    def creates(self) -> None:
        while not self.stop.is_set():
            key = uuid.uuid4().hex
            body = {"name": f"load-{key[:12]}"}
            while not self.stop.is_set():
                reply = self.call(
                    "POST",
                    f"/{DOMAIN}/cvms/external/2/sev-snp",
                    json=body,
                    headers={"Idempotency-Key": key},
                )
                if reply is not None and reply.status_code in (200, 201):
                    with self.lock:
                        self.created.append(reply.json()["id"])
                    break
                time.sleep(0.05)

    def deletes(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                candidates = [c for c in self.created[::3] if c not in self.deleted]
            if candidates:
                # 404 after a 503 means the first try was recorded: deleted all the same.
                code = self.until_done("DELETE", f"/{DOMAIN}/cvms/{candidates[0]}", {204, 404})
                if code is not None:
                    with self.lock:
                        self.deleted.append(candidates[0])
            time.sleep(0.1)

    def reads(self) -> None:
        while not self.stop.is_set():
            self.call("GET", f"/{DOMAIN}/cvms", params={"limit": 20})
            with self.lock:
                some = self.created[-1:]
            for cvm_id in some:
                self.call("GET", f"/{DOMAIN}/cvms/{cvm_id}")
            time.sleep(0.02)


def _states(client: httpx.Client, **query: str) -> dict[str, str]:
    """Every CVM of the domain a list shows (all its pages): id to state."""
    found: dict[str, str] = {}
    while True:
        page = client.get(f"/{DOMAIN}/cvms", params={**query, "limit": 100, "offset": len(found)})
        assert page.status_code == 200, page.text
        body = page.json()
        found.update({cvm["id"]: cvm["state"] for cvm in body["cvms"]})
        if not body["cvms"] or len(found) >= body["total"]:
            return found


def _agent(processes: Processes, api: Api, name: str, tmp: Path) -> str:
    cvm_id = api.create_external(name)
    config = save_config(api.agent_config(cvm_id), tmp / f"{name}.json")
    processes.start_agent(name, config)
    return cvm_id


def test_the_service_rides_out_a_database_outage(
    tmp_path: Path, pycache: Path, cluster: Cluster
) -> None:
    processes = Processes(tmp_path, pycache, database_url=cluster.url(cluster.owner))
    try:
        _drill(processes, cluster, tmp_path)
    finally:
        processes.stop()


def _drill(processes: Processes, cluster: Cluster, tmp: Path) -> None:
    token, _ = processes.run_all(("token", "issue", "--domain", DOMAIN), ("migrate",))
    port = free_port()
    base = f"http://127.0.0.1:{port}/backends"

    def serve() -> Spec:
        agents_port = free_port()
        return Spec(
            args=["serve", "--port", str(port), "--agents-port", str(agents_port)],
            ready=["HTTP API on", "agents endpoint on"],
            health_url=f"{base}/health",
            ports=(port, agents_port),
        )

    server = processes.ready(processes.launch("serve", serve))
    api = Api(base, token.strip())
    agents = [_agent(processes, api, f"agent-{n}", tmp) for n in range(2)]
    for cvm_id in agents:
        wait_status(api, cvm_id, "running", 30, processes)

    load = Load(
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token.strip()}"}, timeout=15
        )
    )
    threads = [
        threading.Thread(target=work, daemon=True)
        for work in (load.creates, load.deletes, load.reads)
    ]
    for thread in threads:
        thread.start()
    time.sleep(3)
    before = load.statuses[503]
    ended = cluster.cut(cluster.owner)
    assert ended > 0, "the service held no connection to cut"
    time.sleep(OUTAGE_SECONDS)
    refused_during = load.statuses[503] - before
    cluster.restore(cluster.owner)
    back_at = time.monotonic()

    def answering() -> float | None:
        reply = load.call("GET", f"/{DOMAIN}/cvms", params={"limit": 1})
        return (
            time.monotonic() - back_at if reply is not None and reply.status_code == 200 else None
        )

    recovered_in = wait_for("answering again", answering, 30, processes.tails)
    time.sleep(3)
    load.stop.set()
    for thread in threads:
        thread.join(60)
    print(
        f"\noutage {OUTAGE_SECONDS:.0f} s: {refused_during} requests refused with 503; "
        f"answering {recovered_in:.2f} s after the database came back; "
        f"{len(load.created)} creates and {len(load.deleted)} deletes acknowledged; "
        f"statuses {dict(load.statuses)}"
    )

    assert load.problems == []
    log = processes.log("serve-0")
    assert "Traceback" not in log
    # An outage is a line every few seconds, not one per failed request.
    assert log.count("store unavailable") <= OUTAGE_SECONDS / 5 + 3
    assert refused_during > 0, "no request saw the outage"
    assert recovered_in <= RECOVERY_SECONDS
    assert server.process.poll() is None, "the service restarted or died"

    # Nothing acknowledged is lost, nothing is stuck.
    def settled() -> dict[str, str] | None:
        inactive = _states(load.client, status="inactive")
        everything_gone = all(inactive.get(cvm_id) == "deleted" for cvm_id in load.deleted)
        return inactive if everything_gone else None

    def unsettled() -> str:
        inactive = _states(load.client, status="inactive")
        left = {c: inactive.get(c) for c in load.deleted if inactive.get(c) != "deleted"}
        return f"not deleted: {left}"

    wait_for("every acknowledged delete torn down", settled, SETTLE_SECONDS, unsettled)
    live = _states(load.client)
    assert set(load.created) - set(load.deleted) <= set(live)
    assert set(live.values()) == {"provisioned"}, live
    for cvm_id in agents:
        wait_status(api, cvm_id, "running", SETTLE_SECONDS, processes)
    load.client.close()
    api.close()
