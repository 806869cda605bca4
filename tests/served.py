"""Real service processes for end-to-end tests and drills: each ``prism-backends``
command in a subprocess of its own, logging to a file, on SQLite or on a
PostgreSQL schema of the test's own; the tenant's view over HTTP; the store
read directly. Its fixtures are registered by the root ``conftest``.
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

T = TypeVar("T")

DOMAIN = "e2e"
CHECKOUT = Path(__file__).resolve().parents[1]
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_taken(log: str) -> bool:
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


def agents_spec(*extra: str) -> Spec:
    """An ``agents`` replica on a free port (``extra``: more arguments)."""
    port = free_port()
    return Spec(
        ["agents", "--agents-port", str(port), *extra],
        ready=[f"agents endpoint on 127.0.0.1:{port} (mTLS)"],
        ports=(port,),
    )


def api_spec() -> Spec:
    """An ``api`` process on a free port."""
    port = free_port()
    return Spec(
        ["api", "--port", str(port)],
        ready=[f"HTTP API on http://127.0.0.1:{port}"],
        health_url=f"http://127.0.0.1:{port}/backends/health",
        ports=(port,),
    )


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
    # The module run as ``prism-backends``: the package, or a test's wrapper around
    # its command line (tests.console.attested), importable from the checkout.
    entry: str = "prism_backends"
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
        if self.entry != "prism_backends":
            env["PYTHONPATH"] = str(CHECKOUT)
        if self.database_url is not None:
            env["PRISM_BACKENDS_DATABASE_URL"] = self.database_url
        env.update(SHORT_SETTINGS)
        return env

    def run(self, *args: str) -> str:
        """Run one command to completion; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", self.entry, *args],
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
            [sys.executable, "-m", self.entry, *args],
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
            if not port_taken(self.log(server.label)):
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
