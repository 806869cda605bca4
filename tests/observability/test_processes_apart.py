"""``api`` and ``worker`` run apart, as a deployment runs them: each one's
``/metrics`` adds up both processes' values (prometheus_client's multiprocess
mode, in DATA_DIR/metrics), a restarted process does not take totals
backwards, and both log JSON lines that carry the request id and no token."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.observability.scrape import Samples, parse, value
from tests.served import DOMAIN, Processes, Spec, api_spec, free_port, wait_for

pytestmark = pytest.mark.slow

JSON = ("--log-format", "json")
# The worker sweeps often: each sweep lists every provider's machines, a call it counts.
SWEEP = ("--set", "sweep_seconds=0.3")
LIST_OWNED = {"provider": "external", "operation": "list_owned", "outcome": "ok"}


def _worker(port: int) -> Spec:
    return Spec(
        ["worker", *JSON, *SWEEP, "--metrics-port", str(port)],
        ready=["lifecycle workers started", f"metrics on http://127.0.0.1:{port}/metrics"],
        health_url=f"http://127.0.0.1:{port}/metrics",
        ports=(port,),
    )


def _scrape(url: str) -> Samples:
    reply = httpx.get(url, timeout=5)
    assert reply.status_code == 200, reply.text
    return parse(reply.text)


def test_api_and_worker_apart_share_metrics_and_log_json(embedded: Processes) -> None:
    processes = embedded
    processes.run("migrate")
    token = processes.run("token", "issue", "--domain", DOMAIN).strip()
    worker_port = free_port()
    api = processes.ready(processes.launch("api", lambda: _with(api_spec(), *JSON)))
    worker = processes.ready(processes.launch("worker", lambda: _worker(worker_port)))
    api_url = f"http://127.0.0.1:{api.ports[0]}"
    worker_url = f"http://127.0.0.1:{worker.ports[0]}/metrics"
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "apart-1"}

    created = httpx.post(
        f"{api_url}/backends/{DOMAIN}/cvms/external/2/sev-snp",
        json={"name": "apart"},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text

    def both_seen() -> tuple[Samples, Samples] | None:
        from_api, from_worker = _scrape(f"{api_url}/metrics"), _scrape(worker_url)
        sweeps = value(from_api, "backends_provider_calls_total", **LIST_OWNED)
        creates = value(
            from_worker, "backends_api_request_count", method="create_cvm", status="201"
        )
        return (from_api, from_worker) if sweeps >= 2 and creates == 1 else None

    from_api, from_worker = wait_for("both processes' values", both_seen, 20, processes.tails)
    for scraped in (from_api, from_worker):
        assert value(scraped, "backends_store_up") == 1
        starting = {"provider": "external", "state": "provisioned", "status": "starting"}
        assert value(scraped, "backends_cvms", **starting) == 1

    # A worker killed and started again: its counts so far stay in the totals.
    swept = value(_scrape(f"{api_url}/metrics"), "backends_provider_calls_total", **LIST_OWNED)
    processes.kill(worker.label)
    processes.ready(processes.launch("worker-again", lambda: _worker(free_port())))
    time.sleep(1.0)
    again = value(_scrape(f"{api_url}/metrics"), "backends_provider_calls_total", **LIST_OWNED)
    assert again > swept

    lines = [json.loads(line) for line in _logged(processes, api.label)]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    traced = [line for line in lines if line.get("request_id") == "apart-1"]
    assert traced, lines[-5:]
    assert any(line.get("domain") == DOMAIN for line in traced), traced
    for label in (api.label, worker.label, "worker-again-0"):
        log = processes.log(label)
        assert token not in log and token.split(".")[2] not in log
        assert all(line.startswith("{") for line in _logged(processes, label)), label


def _logged(processes: Processes, label: str) -> list[str]:
    """The process's own lines (the harness heads each log with a ``#`` line)."""
    return [line for line in processes.log(label).splitlines() if line and line[0] != "#"]


def _with(spec: Spec, *extra: str) -> Spec:
    spec.args.extend(extra)
    return spec


def test_a_metrics_port_in_use_is_a_clear_start_up_error(embedded: Processes) -> None:
    processes = embedded
    processes.run("migrate")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "prism_backends", "worker", "--metrics-port", str(port)],
            cwd=processes.tmp, env=processes.env(), capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert f"error: cannot serve metrics on port {port}" in stderr
    assert "Traceback" not in stderr
