"""End to end: real service processes, a real reference agent, over mutual TLS.

1. On the embedded default (SQLite, ``serve``): an ``external`` CVM's agent dials
   in and the CVM is ``running``; statistics record it up; SIGKILLed, it is
   ``offline`` and recorded down; back, ``running`` again; the CVM deleted, the
   agent is told to go (exit 0); started again, it is refused (exit 3) and
   nothing more is recorded for that CVM.
2. On PostgreSQL: an API, two agents replicas sharing a data directory (one CA)
   and a worker (sampler and liveness reaper). The replica holding the agent's
   stream is SIGKILLed: it never closes the session, which must expire so that
   the CVM goes ``offline``; the agent, pointed at the other replica, makes it
   ``running`` again.

Run them with: PRISM_BACKENDS_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
uv run pytest -m slow tests/agents/test_e2e.py
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from tests.conftest import POSTGRES_ENV

pytestmark = pytest.mark.slow

T = TypeVar("T")

DOMAIN = "e2e"
STATS_INTERVAL = 1.0
HEARTBEAT = 1.0
OFFLINE_AFTER = 3.0
# What AgentsEndpoint gives a session before it expires unless renewed.
SESSION_TTL = max(3 * HEARTBEAT, OFFLINE_AFTER)
# How often the sampler's reaper runs (Sampler._run).
REAP_EVERY = min(HEARTBEAT, STATS_INTERVAL)
# The hub writes what agents say every FLUSH seconds (agents/hub.py).
FLUSH = 0.5
# Scheduling and store latency on a busy two-core machine.
SLACK = 1.5
# Starting a Python process that imports the whole service takes seconds.
START_TIMEOUT = 60.0
# The reference agent logs once, about its attestation evidence, before it first dials:
# what its start-up took (seconds, on a busy machine) is not the service's to answer for.
AGENT_DIALS = "prism_backends.agent.client:"
# From an agent's first dial to its CVM being running: TLS, one state answer, one flush.
DIAL_TIMEOUT = 5.0
# From deleting a CVM to its agent being told to go: the next heartbeat sends disconnectReq.
DISCONNECT_TIMEOUT = HEARTBEAT + FLUSH + 2 * SLACK
# An agent that decided to exit does so within this (interpreter and gRPC teardown).
EXIT_TIMEOUT = 15.0

SHORT_SETTINGS = {
    "PRISM_BACKENDS_STATS_INTERVAL_SECONDS": str(STATS_INTERVAL),
    "PRISM_BACKENDS_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "PRISM_BACKENDS_OFFLINE_AFTER_SECONDS": str(OFFLINE_AFTER),
    "PRISM_BACKENDS_POLL_SECONDS": "0.2",
    "PRISM_BACKENDS_LOG_LEVEL": "info",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_taken(log: str) -> bool:
    lowered = log.lower()
    return "address already in use" in lowered or "agents endpoint cannot start" in lowered


# --- processes -------------------------------------------------------------------------


@dataclass
class Spec:
    """How to start a server on the ports it was given, and how to tell it is ready."""

    args: list[str]
    ready: list[str]
    health_url: str | None = None
    ports: tuple[int, ...] = ()


@dataclass
class Server:
    name: str
    make: Callable[[], Spec]
    spec: Spec
    label: str
    process: subprocess.Popen[bytes]

    @property
    def ports(self) -> tuple[int, ...]:
        return self.spec.ports


@dataclass
class Processes:
    """Every process a test starts, each logging to a file of its own; stop() kills them all."""

    tmp: Path
    pycache: Path
    database_url: str | None = None
    data_dir: Path = field(init=False)
    every: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = self.tmp / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)

    @property
    def log_dir(self) -> Path:
        return self.tmp / "logs"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
        # Each process imports the whole service: compile it once, into a cache of this
        # module's own (PYTHONDONTWRITEBYTECODE would have every process compile it again).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        env["PRISM_BACKENDS_DATA_DIR"] = str(self.data_dir)
        if self.database_url is not None:
            env["PRISM_BACKENDS_DATABASE_URL"] = self.database_url
        env.update(SHORT_SETTINGS)
        return env

    def run(self, *args: str) -> str:
        """Run one command to completion; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "prism_backends", *args],
            cwd=self.tmp,
            env=self.env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (
            f"prism-backends {' '.join(args)} failed ({done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')}"
        )
        return done.stdout.decode()

    def spawn(self, label: str, *args: str) -> subprocess.Popen[bytes]:
        assert label not in self.every, label
        log = (self.log_dir / f"{label}.log").open("wb")
        self.logs.append(log)
        log.write(f"# {datetime.now()} prism-backends {' '.join(args)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "prism_backends", *args],
            cwd=self.tmp,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.every[label] = process
        return process

    def log(self, label: str) -> str:
        path = self.log_dir / f"{label}.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def tail(self, label: str, lines: int = 30) -> str:
        # Without the access log of the test's own polling.
        kept = [line for line in self.log(label).splitlines() if '"GET /' not in line]
        return "\n".join(kept[-lines:])

    def tails(self) -> str:
        """The end of every log, for failure messages."""
        return "\n".join(
            f"--- {label} (exit {process.poll()}) ---\n{self.tail(label)}"
            for label, process in self.every.items()
        )

    def launch(self, name: str, make: Callable[[], Spec]) -> Server:
        """Spawn a server on the ports ``make`` picks; ``ready`` waits for it."""
        spec = make()
        label = f"{name}-0"
        return Server(name, make, spec, label, self.spawn(label, *spec.args))

    def ready(self, server: Server) -> Server:
        """Wait until the server's own log shows every ready line (so that the port is
        not someone else's) and its health URL answers; on other ports if one was taken
        meanwhile."""
        for attempt in range(1, 4):
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if server.process.poll() is not None:
                    break
                log = self.log(server.label)
                if all(line in log for line in server.spec.ready):
                    if server.spec.health_url is None:
                        return server
                    with contextlib.suppress(httpx.TransportError):
                        if httpx.get(server.spec.health_url, timeout=1).status_code == 200:
                            return server
                time.sleep(0.1)
            else:
                pytest.fail(
                    f"{server.label} did not start within {START_TIMEOUT:.0f} s:\n"
                    f"{self.tail(server.label)}"
                )
            if not _port_taken(self.log(server.label)):
                pytest.fail(
                    f"{server.label} exited ({server.process.returncode}):\n"
                    f"{self.tail(server.label)}"
                )
            server.spec = server.make()
            server.label = f"{server.name}-{attempt}"
            server.process = self.spawn(server.label, *server.spec.args)
        pytest.fail(f"{server.name} found no free port:\n{self.tail(server.label)}")

    def run_all(self, *commands: Sequence[str]) -> list[str]:
        """Run commands to completion, at once; their stdouts."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: self.run(*args), commands))

    def start_agent(self, label: str, config: Path) -> float:
        """Spawn the reference agent; the wall-clock time it started dialling."""
        self.spawn(label, "agent", "--config", str(config))
        return self.wait_log(label, AGENT_DIALS, START_TIMEOUT)

    def wait_log(self, label: str, needle: str, timeout: float) -> float:
        """Wait until the process logged ``needle``; the wall-clock time it was seen."""
        process = self.every[label]
        deadline = time.monotonic() + timeout
        while True:
            exited = process.poll() is not None
            if needle in self.log(label):
                return time.time()
            if exited or time.monotonic() > deadline:
                pytest.fail(
                    f"{label} did not log {needle!r} within {timeout:.1f} s "
                    f"(exit {process.poll()}):\n{self.tails()}"
                )
            time.sleep(0.05)

    def exit_code(self, label: str, timeout: float = EXIT_TIMEOUT) -> int:
        process = self.every[label]
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{label} did not exit within {timeout:.1f} s:\n{self.tails()}")

    def kill(self, label: str) -> None:
        process = self.every[label]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.every.values():
            if process.poll() is None:
                process.kill()
        for process in self.every.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pycache")


@pytest.fixture
def embedded(tmp_path: Path, pycache: Path) -> Iterator[Processes]:
    """Processes on the embedded default store (SQLite in the data directory)."""
    processes = Processes(tmp_path, pycache)
    try:
        yield processes
    finally:
        processes.stop()


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A schema of this test's own on the test PostgreSQL, dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"needs {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    schema = f"prism_agents_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def on_postgres(tmp_path: Path, pycache: Path, postgres_schema: str) -> Iterator[Processes]:
    """Processes on PostgreSQL; killed before the schema is dropped."""
    processes = Processes(tmp_path, pycache, database_url=postgres_schema)
    try:
        yield processes
    finally:
        processes.stop()


# --- the tenant's side -------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # the slot's start, epoch seconds
    up: bool


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self._client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def close(self) -> None:
        self._client.close()

    def _json(self, response: httpx.Response, expected: int = 200) -> dict[str, Any]:
        assert response.status_code == expected, f"{response.request.url}: {response.text}"
        body: dict[str, Any] = response.json()
        return body

    def create_external(self, name: str) -> str:
        response = self._client.post(f"/{DOMAIN}/cvms/external/2/sev-snp", json={"name": name})
        cvm = self._json(response, 201)
        assert cvm["provider"] == "external"
        assert cvm["state"] == "provisioned"
        cvm_id: str = cvm["id"]
        return cvm_id

    def agent_config(self, cvm_id: str) -> dict[str, Any]:
        return self._json(self._client.get(f"/{DOMAIN}/cvms/{cvm_id}/agent_config"))

    def status(self, cvm_id: str) -> str:
        status: str = self._json(self._client.get(f"/{DOMAIN}/cvms/{cvm_id}"))["status"]
        return status

    def samples(self, cvm_id: str) -> list[Sample]:
        """Uptime samples, oldest first."""
        body = self._json(
            self._client.get(f"/{DOMAIN}/cvms/{cvm_id}/statistics", params={"limit": 10000})
        )
        found = [
            Sample(datetime.fromisoformat(s["timestamp"]).timestamp(), s["status"])
            for s in body["cvm_stats"]
        ]
        return sorted(found, key=lambda sample: sample.at)

    def events(self, cvm_id: str) -> dict[str, Any]:
        return self._json(
            self._client.get(f"/{DOMAIN}/cvms/{cvm_id}/events", params={"limit": 100})
        )

    def delete(self, cvm_id: str) -> None:
        response = self._client.delete(f"/{DOMAIN}/cvms/{cvm_id}")
        assert response.status_code == 204, response.text


def save_config(config: dict[str, Any], path: Path, *, agents_address: str | None = None) -> Path:
    if agents_address is not None:
        config = {**config, "agents_address": agents_address}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, explain: Callable[[], str]
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:.1f} s\n{explain()}")
        time.sleep(0.1)


def wait_status(api: Api, cvm_id: str, status: str, timeout: float, processes: Processes) -> float:
    """Wait for the CVM's status; the wall-clock time it was first seen."""

    def seen() -> float | None:
        return time.time() if api.status(cvm_id) == status else None

    return wait_for(
        f"{status}",
        seen,
        timeout,
        lambda: f"status is {api.status(cvm_id)!r}\n{processes.tails()}",
    )


# --- the store, read directly --------------------------------------------------------------


def stored_events(engine: Engine, cvm_id: str) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, kind, occurred_at, received_at, level, message, details "
                "FROM agent_events WHERE cvm_id = :cvm_id ORDER BY id"
            ),
            {"cvm_id": cvm_id},
        )
        return [tuple(row) for row in rows]


def stored_session(engine: Engine, cvm_id: str) -> tuple[Any, ...] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT replica, connected_at, last_seen_at, expires_at "
                "FROM agent_sessions WHERE cvm_id = :cvm_id"
            ),
            {"cvm_id": cvm_id},
        ).first()
        return None if row is None else tuple(row)


def stored_status(engine: Engine, cvm_id: str) -> str:
    with engine.connect() as connection:
        status: str = connection.execute(
            text("SELECT status FROM cvms WHERE id = :cvm_id"), {"cvm_id": cvm_id}
        ).scalar_one()
        return status


# --- 1. the embedded default ----------------------------------------------------------------


def test_an_agent_drives_status_statistics_and_events_until_its_cvm_is_deleted(
    embedded: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    processes = embedded

    def serve() -> Spec:
        http_port, agents_port = _free_port(), _free_port()
        return Spec(
            ["serve", "--port", str(http_port), "--agents-port", str(agents_port)],
            ready=[
                f"agents endpoint on 127.0.0.1:{agents_port} (mTLS)",
                f"Uvicorn running on http://127.0.0.1:{http_port}",
            ],
            health_url=f"http://127.0.0.1:{http_port}/backends/health",
            ports=(http_port, agents_port),
        )

    # The issuer key is created exclusively (auth/keys.py): both may run at once.
    server = processes.launch("serve", serve)
    token = processes.run("token", "issue", "--domain", DOMAIN).strip()
    processes.ready(server)
    http_port, agents_port = server.ports
    timings: dict[str, float] = {"start-up": time.monotonic() - started}
    api = Api(f"http://127.0.0.1:{http_port}/backends", token)
    engine = create_engine(f"sqlite:///{processes.data_dir / 'prism-backends.db'}")
    try:
        cvm_id = api.create_external("tenant-machine")
        assert api.status(cvm_id) == "starting"
        config = api.agent_config(cvm_id)
        assert config["cvm_id"] == cvm_id
        assert config["agents_address"] == f"localhost:{agents_port}"
        config_file = save_config(config, processes.tmp / "agent.json")

        # The agent dials in: running.
        dialling = processes.start_agent("agent-1", config_file)
        running_at = wait_status(api, cvm_id, "running", DIAL_TIMEOUT, processes)
        timings["running after dialling"] = running_at - dialling

        # The sampler records it up, for at least two whole slots.
        def up_slots() -> list[Sample] | None:
            whole = [
                s
                for s in api.samples(cvm_id)
                if s.at >= running_at and s.at + STATS_INTERVAL + FLUSH <= time.time()
            ]
            return whole if len(whole) >= 2 else None

        wait_for("two samples while up", up_slots, 6 * STATS_INTERVAL + SLACK, processes.tails)

        # SIGKILL: the stream breaks, the CVM is offline within the configured timeout.
        killed_at = time.time()
        processes.kill("agent-1")
        # The endpoint sees the stream end at once; failing that, the reaper finds the
        # agent silent OFFLINE_AFTER after its last answer, at its next pass.
        offline_at = wait_status(
            api, cvm_id, "offline", OFFLINE_AFTER + REAP_EVERY + SLACK, processes
        )
        timings["offline after SIGKILL"] = offline_at - killed_at

        def down_after_kill() -> list[Sample] | None:
            down = [s for s in api.samples(cvm_id) if s.at >= killed_at and not s.up]
            return down or None

        wait_for(
            "a down sample after the kill", down_after_kill, 3 * STATS_INTERVAL + SLACK,
            processes.tails,
        )  # fmt: skip
        samples = api.samples(cvm_id)
        # Each slot is observed during [its start, its end + store latency).
        while_up = [s for s in samples if running_at <= s.at <= killed_at - STATS_INTERVAL - FLUSH]
        assert while_up, samples
        assert all(s.up for s in while_up), f"down samples while the agent was up: {samples}"
        while_down = [s for s in samples if s.at >= offline_at]
        assert all(not s.up for s in while_down), f"up samples while offline: {samples}"

        # Back again: running.
        restarted_at = time.time()
        dialling = processes.start_agent("agent-2", config_file)
        running_again_at = wait_status(api, cvm_id, "running", DIAL_TIMEOUT, processes)
        timings["running again after dialling"] = running_again_at - dialling
        samples = api.samples(cvm_id)
        still_down = [
            s for s in samples if offline_at <= s.at and s.at + STATS_INTERVAL <= restarted_at
        ]
        assert all(not s.up for s in still_down), f"up samples while offline: {samples}"

        # The events, newest first: connected, state, disconnected, connected, state.
        def both_connections() -> dict[str, Any] | None:
            page = api.events(cvm_id)
            kinds = [e["kind"] for e in page["events"]]
            return page if kinds.count("state") == 2 else None

        page = wait_for(
            "the second connection's state event", both_connections, 2 * HEARTBEAT + SLACK,
            lambda: json.dumps(api.events(cvm_id), indent=1),
        )  # fmt: skip
        events = page["events"]
        assert page["total"] == len(events)
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids, reverse=True), "events are not newest first"
        received = [datetime.fromisoformat(e["received_at"]) for e in events]
        assert received == sorted(received, reverse=True), "events are not newest first"
        assert all(e["cvm_id"] == cvm_id for e in events)
        lifecycle = [e for e in events if e["kind"] in ("connected", "state", "disconnected")]
        assert [e["kind"] for e in lifecycle] == [
            "state",
            "connected",
            "disconnected",
            "state",
            "connected",
        ], json.dumps(events, indent=1)
        assert all(e["message"] == "ready" for e in lifecycle if e["kind"] == "state")
        logs = [e for e in events if e["kind"] == "log"]
        assert [e["message"] for e in logs] == ["agent started", "agent started"]

        # Deleted: the agent is told to disconnect at its next heartbeat, and exits 0.
        deleted_at = time.time()
        api.delete(cvm_id)
        told_at = processes.wait_log(
            "agent-2", "the service asked this agent to disconnect", DISCONNECT_TIMEOUT
        )
        timings["disconnectReq after delete"] = told_at - deleted_at
        code = processes.exit_code("agent-2")
        timings["agent exit after delete"] = time.time() - deleted_at
        assert code == 0, processes.tail("agent-2")

        # Once the endpoint wrote the stream's end, nothing more may be recorded.
        def disconnection_recorded() -> list[tuple[Any, ...]] | None:
            rows = stored_events(engine, cvm_id)
            return rows if rows and rows[-1][1] == "disconnected" else None

        before = wait_for(
            "the disconnection recorded",
            disconnection_recorded,
            FLUSH + SLACK,
            lambda: "\n".join(map(str, stored_events(engine, cvm_id))),
        )
        disconnected_at = time.time()
        # The endpoint closes the session as the stream ends; should that be lost, the
        # session expires and the reaper removes it.
        wait_for(
            "the session closed",
            lambda: stored_session(engine, cvm_id) is None,
            SESSION_TTL + REAP_EVERY + SLACK,
            lambda: f"{stored_session(engine, cvm_id)}\n{processes.tails()}",
        )
        timings["session gone after the disconnection"] = time.time() - disconnected_at
        assert stored_events(engine, cvm_id) == before
        assert stored_status(engine, cvm_id) == "inactive"

        # Started again with the same (revoked) credential: refused, exit 3.
        dialling = processes.start_agent("agent-3", config_file)
        refused_at = processes.wait_log(
            "agent-3",
            "the service refused this agent: this certificate has been revoked",
            DIAL_TIMEOUT,
        )
        timings["refused after dialling"] = refused_at - dialling
        code = processes.exit_code("agent-3")
        assert code == 3, processes.tail("agent-3")
        assert "agent refused: this certificate has been revoked" in processes.log(server.label)
        # Absence needs a quiet period: longer than the hub's flush and one heartbeat.
        time.sleep(FLUSH + HEARTBEAT)
        assert stored_events(engine, cvm_id) == before, "events recorded for a refused agent"
        assert stored_session(engine, cvm_id) is None
        assert stored_status(engine, cvm_id) == "inactive"
        assert server.process.poll() is None, processes.tail(server.label)
    finally:
        api.close()
        engine.dispose()
    with capsys.disabled():
        shown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
        print(f"\nembedded: {shown}; {time.monotonic() - started:.1f} s in all")


# --- 2. replicas and a crash, on PostgreSQL ------------------------------------------------


@pytest.mark.postgres
def test_a_crashed_replicas_session_expires_and_the_agent_moves_to_another(
    on_postgres: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    processes = on_postgres
    token, _ = processes.run_all(("token", "issue", "--domain", DOMAIN), ("migrate",))
    token = token.strip()

    def replica() -> Spec:
        port = _free_port()
        return Spec(
            ["agents", "--agents-port", str(port)],
            ready=[f"agents endpoint on 127.0.0.1:{port} (mTLS)"],
            ports=(port,),
        )

    def http_api() -> Spec:
        port = _free_port()
        return Spec(
            ["api", "--port", str(port)],
            ready=[f"Uvicorn running on http://127.0.0.1:{port}"],
            health_url=f"http://127.0.0.1:{port}/backends/health",
            ports=(port,),
        )

    def worker() -> Spec:
        return Spec(["worker"], ready=["lifecycle workers started"])

    # The first replica creates the CA and the endpoint's certificate in the shared data
    # directory; the others start once it has: processes that create them at once each
    # keep a CA of their own (agents/pki.py, load_or_create_ca does not create exclusively).
    replica_a = processes.ready(processes.launch("agents-a", replica))
    others = [
        processes.launch("agents-b", replica),
        processes.launch("api", http_api),
        processes.launch("worker", worker),
    ]
    replica_b, http, _ = [processes.ready(server) for server in others]
    (port_a,), (port_b,), (http_port,) = replica_a.ports, replica_b.ports, http.ports
    timings: dict[str, float] = {"start-up": time.monotonic() - started}
    api = Api(f"http://127.0.0.1:{http_port}/backends", token)
    engine = create_engine(processes.database_url or "")
    try:
        cvm_id = api.create_external("replicated")
        config = api.agent_config(cvm_id)
        to_a = save_config(
            config, processes.tmp / "agent-a.json", agents_address=f"localhost:{port_a}"
        )
        to_b = save_config(
            config, processes.tmp / "agent-b.json", agents_address=f"localhost:{port_b}"
        )

        dialling = processes.start_agent("agent-to-a", to_a)
        timings["running via A after dialling"] = (
            wait_status(api, cvm_id, "running", DIAL_TIMEOUT, processes) - dialling
        )

        def answered_session() -> tuple[Any, ...] | None:
            row = stored_session(engine, cvm_id)
            return row if row is not None and row[2] is not None else None

        session = wait_for(
            "A's session answered", answered_session, HEARTBEAT + FLUSH + SLACK, processes.tails
        )
        replica_a_name = session[0]

        # A crashes: nothing closes its session, which expires unless renewed.
        killed_at = time.time()
        replica_a.process.send_signal(signal.SIGKILL)
        replica_a.process.wait(timeout=30)
        left = stored_session(engine, cvm_id)
        assert left is not None and left[0] == replica_a_name, "A's session vanished at once"
        # The last renewal was at most one heartbeat before the kill; one reaper pass after
        # the expiry, the CVM is offline.
        offline_at = wait_status(
            api, cvm_id, "offline", SESSION_TTL + REAP_EVERY + SLACK, processes
        )
        timings["offline after A's SIGKILL"] = offline_at - killed_at
        wait_for(
            "A's expired session removed",
            lambda: stored_session(engine, cvm_id) is None,
            REAP_EVERY + SLACK,
            lambda: f"{stored_session(engine, cvm_id)}\n{processes.tails()}",
        )
        assert api.status(cvm_id) == "offline"

        # The agent, pointed at B: running again, on a session of B's.
        processes.kill("agent-to-a")
        dialling = processes.start_agent("agent-to-b", to_b)
        timings["running via B after dialling"] = (
            wait_status(api, cvm_id, "running", DIAL_TIMEOUT, processes) - dialling
        )
        session = wait_for(
            "B's session", lambda: stored_session(engine, cvm_id), FLUSH + SLACK, processes.tails
        )
        assert session[0] != replica_a_name
        assert session[0].startswith("agents:")
        # It stays running past the first expiry of B's session (a reaper pass after it):
        # B renews the session and the agent answers.
        connected_at: datetime = session[1]  # timestamptz: aware
        assert connected_at.tzinfo is not None
        steady_until = connected_at.timestamp() + SESSION_TTL + REAP_EVERY + FLUSH
        while time.time() < steady_until:
            assert api.status(cvm_id) == "running", processes.tails()
            time.sleep(0.1)
        assert replica_b.process.poll() is None, processes.tails()
    finally:
        api.close()
        engine.dispose()
    with capsys.disabled():
        shown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
        print(f"\nreplicas: {shown}; {time.monotonic() - started:.1f} s in all")
