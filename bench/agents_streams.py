"""Concurrent agent streams on one ``prism-backends agents`` process, against its anchor.

Usage::

    uv run python -m bench.agents_streams [--agents 10000] [--client-processes N]
        [--heartbeat 10] [--rounds 3] [--server {ours,anchor,both}]

What it does, in order:

1. drops and recreates its own database (the last path segment of
   ``--database-url``, which must contain ``bench``), then runs
   ``prism-backends migrate`` on it as a subprocess (only when ours runs);
2. creates the agents CA in the data directory the servers will use, with the
   service's own code (``load_or_create_ca``, ``sealer_from``), issues one client
   certificate per CVM (``AgentCA.issue_client``, as ``CredentialIssuer`` does)
   and fills the store with binary COPY: ``--agents`` provisioned external CVMs
   (status ``starting``, as a create leaves them) and their credentials, the
   private keys sealed as the service seals them. This is done once, for every
   server kind;
3. for each server kind of ``--server`` in turn (ours, then the anchor):

   a. starts it as a real subprocess of its own session, with its open-files limit
      raised and the heartbeat at ``--heartbeat`` seconds: ours is ONE
      ``prism-backends agents`` process, the anchor ``bench.agents_anchor`` (the
      same mutual TLS, server options and heartbeat, no store);
   b. starts ``--client-processes`` fresh client processes that each open their share
      of the streams: grpc.aio, one channel per agent, each with its own client
      certificate and ``job-id`` metadata, answering every agentStateReq with an
      agentStateRes, and reconnecting with backoff as the reference agent does;
   c. measures the time until every stream is open and every CVM is ``running`` (in
      the store for ours; the anchor keeps none, so there a stream the clients hold
      counts as a session and a running CVM), the server's CPU until all streams are
      open (its CPU per connect), its resident memory, and its CPU time (utime +
      stime of /proc/PID/stat) over ``--rounds`` heartbeat intervals, checking that
      every CVM stays running meanwhile;
   d. stops the clients, waits (ours only) until the store has every CVM offline,
      stops the server and prints its tables;

4. prints ours against the anchor, with their ratios and the targets, and writes
   everything as JSON to ``bench/results/agents_streams.json``;
5. stops the clients and the servers and drops the database, also on error,
   Ctrl-C or SIGTERM.

It asserts nothing about speed. Clients, server and PostgreSQL share the
machine's cores: the connect time includes their competition, the CPU time of
the server process (a per-process counter) much less so.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, ClassVar

import grpc
import psycopg
from sqlalchemy.engine import make_url

from bench.agents_compare import (
    Row,
    Summary,
    compare,
    comparison_table,
    ratios_json,
    targets_json,
)
from bench.harness import (
    child_env,
    cli,
    cpu_ticks,
    drop_database,
    exit_cleanly_on_signals,
    free_port,
    libpq_conninfo,
    machine_ticks,
    percentile,
    postgres_ticks,
    recreate_database,
    run_cli,
    status_kib,
)
from bench.store import copy_model_rows
from prism_backends.agents.models import AgentCredential
from prism_backends.agents.pki import CA_CERT_FILE, load_or_create_ca
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.agents.sealing import sealer_from
from prism_backends.cvms.models import CVM

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/prism_bench_agents"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "agents_streams.json"
DOMAIN = "bench-agents"
CERT_VALIDITY = timedelta(days=365)  # the default agent_cert_days
SERVER_NAME = "localhost"  # in the agents endpoint's certificate by default
AGENT_STATE = "ready"  # what the reference agent answers
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
FD_MARGIN = 4096  # files beyond one socket per stream: the store, logs, libraries
# The service's default stats_interval_seconds: every 5 minutes the sampler in the
# agents process writes one uptime bit per CVM.
STATS_INTERVAL = 300

# The CVM columns given; the others take the model's defaults (bench/store.py).
CVM_COLUMNS = (
    "id",
    "domain_id",
    "name",
    "provider",
    "cc_platform",
    "vcpus",
    "agent_log_level",
    "cvm_id",
    "state",
    "status",
    "monthly_cost_cents",
    "price_table_version",
    "created_at",
    "updated_at",
    "request_digest",
)
CREDENTIAL_COLUMNS = ("cvm_id", "serial", "cert_pem", "sealed_key", "not_before", "not_after")

# The last line of a traceback: ``package.module.SomeError: message``.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Detected|Unavailable)\b.*")

# --- The client processes ----------------------------------------------------------------

# One row of int64 counters per client process, written by that process only.
OPEN = 0  # streams open now (the first agentStateReq arrived, and no end since)
EVER_OPENED = 1  # agents whose stream opened at least once
STATE_REQUESTS = 2  # agentStateReq received
ANSWERS = 3  # agentStateRes written
CONNECT_FAILURES = 4  # attempts that ended before the first agentStateReq
DROPS = 5  # open streams that ended (an error, or the server closing them)
DISCONNECT_REQUESTS = 6  # disconnectReq received
READY = 7  # 1 once the process has loaded its agents and waits for the start
FIELDS = 8

CONNECT_TIMEOUT = 60.0
BACKOFF_FIRST, BACKOFF_CAP = 1.0, 30.0


@dataclass(frozen=True, slots=True)
class ClientJob:
    index: int
    shard: Path  # JSON: [[cvm_id, cert_pem, key_pem], ...]
    ca_cert: Path
    address: str
    connect_in_flight: int
    nofile: int
    report: Path  # JSON written at exit: errors and connect latencies


class _Client:
    """The agents of one client process, on one asyncio loop."""

    def __init__(self, job: ClientJob, counters: Any) -> None:
        self.job = job
        self.counters = counters
        self.base = job.index * FIELDS
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.error_after: dict[str, list[float]] = {}
        self.connect_seconds: list[float] = []
        self.rng = random.Random(job.index)  # jitter, not security

    def add(self, slot: int, amount: int = 1) -> None:
        self.counters[self.base + slot] += amount

    def note(self, kind: str, detail: str, after: float) -> None:
        """An attempt or a stream that ended badly ``after`` seconds."""
        self.errors[kind] += 1
        self.error_after.setdefault(kind, []).append(round(after, 2))
        if kind not in self.samples:
            self.samples[kind] = detail[:300]

    async def answer(
        self,
        call: grpc.aio.StreamStreamCall[cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage],
        message: cvms_pb2.ServerStreamMessage,
    ) -> bool:
        """Answer as the reference agent does; False on disconnectReq."""
        kind = message.WhichOneof("message")
        if kind == "agentStateReq":
            self.add(STATE_REQUESTS)
            await call.write(
                cvms_pb2.ClientStreamMessage(
                    agentStateRes=cvms_pb2.AgentStateRes(
                        id=message.agentStateReq.id, state=AGENT_STATE
                    )
                )
            )
            self.add(ANSWERS)
        elif kind == "disconnectReq":
            self.add(DISCONNECT_REQUESTS)
            return False
        return True

    async def agent(
        self, cvm_id: str, credentials: grpc.ChannelCredentials, gate: asyncio.Semaphore
    ) -> None:
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        backoff = BACKOFF_FIRST
        ever = False
        while True:
            opened = False
            started = time.perf_counter()
            try:
                # A channel connects when its first call starts: the gate bounds the
                # connects in flight (TCP, TLS, the server's checks), not the open streams.
                async with grpc.aio.secure_channel(
                    self.job.address, credentials, options=options
                ) as channel:
                    async with gate:
                        started = time.perf_counter()
                        call = cvms_pb2_grpc.ServiceStub(channel).Process(
                            metadata=(("job-id", cvm_id),)
                        )
                        first = await asyncio.wait_for(call.read(), CONNECT_TIMEOUT)
                    if first is grpc.aio.EOF:
                        raise ConnectionError("the stream ended before the first agentStateReq")
                    assert isinstance(first, cvms_pb2.ServerStreamMessage)
                    opened = True
                    self.add(OPEN)
                    if not ever:
                        ever = True
                        self.add(EVER_OPENED)
                        self.connect_seconds.append(time.perf_counter() - started)
                    backoff = BACKOFF_FIRST
                    if not await self.answer(call, first):
                        return
                    while True:
                        message = await call.read()
                        if message is grpc.aio.EOF:
                            self.note(
                                "stream ended by the server", "EOF", time.perf_counter() - started
                            )
                            break
                        assert isinstance(message, cvms_pb2.ServerStreamMessage)
                        if not await self.answer(call, message):
                            return
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                self.note(
                    f"{'drop' if opened else 'connect'} {error.code().name}",
                    f"{error.details()} {error.debug_error_string()}",
                    time.perf_counter() - started,
                )
            except TimeoutError:
                self.note(
                    "connect timeout",
                    f"no agentStateReq within {CONNECT_TIMEOUT:.0f}s",
                    time.perf_counter() - started,
                )
            except Exception as error:
                self.note(
                    f"{'drop' if opened else 'connect'} {type(error).__name__}",
                    str(error),
                    time.perf_counter() - started,
                )
            finally:
                if opened:
                    self.add(OPEN, -1)
            self.add(DROPS if opened else CONNECT_FAILURES)
            await asyncio.sleep(self.rng.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def run(self, start: Any, stop: Any) -> None:
        job = self.job
        ca_pem = job.ca_cert.read_bytes()
        agents = [
            (
                cvm_id,
                grpc.ssl_channel_credentials(
                    root_certificates=ca_pem,
                    private_key=key.encode(),
                    certificate_chain=cert.encode(),
                ),
            )
            for cvm_id, cert, key in json.loads(job.shard.read_text())
        ]
        self.add(READY)
        await asyncio.to_thread(start.wait)
        gate = asyncio.Semaphore(job.connect_in_flight)
        tasks = [asyncio.create_task(self.agent(cvm_id, cred, gate)) for cvm_id, cred in agents]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def client_process(job: ClientJob, counters: Any, start: Any, stop: Any) -> None:
    """The entry point of a client process (spawned: grpc does not survive fork)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through ``stop``
    set_nofile(job.nofile)
    client = _Client(job, counters)
    try:
        asyncio.run(client.run(start, stop))
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        job.report.write_text(
            json.dumps(
                {
                    "errors": dict(client.errors),
                    "error_samples": client.samples,
                    "error_after_seconds": client.error_after,
                    "connect_seconds": client.connect_seconds,
                    "cpu_seconds": usage.ru_utime + usage.ru_stime,
                    "max_rss_kib": usage.ru_maxrss,
                }
            )
        )


# --- Limits and /proc ----------------------------------------------------------------------


def set_nofile(wanted: int) -> int:
    """Raise this process's open-files limit to ``wanted`` (the hard limit too, when
    allowed); the limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_value(pid: int, key: str) -> str:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return line.split(":", 1)[1].strip()
    return ""


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as handle:
        for line in handle:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "?"


# --- The data ------------------------------------------------------------------------------


@dataclass
class Fill:
    """The agents: their CVM ids, their credentials as the store keeps them, each client
    process's share (a file), and how long issuing and copying them took."""

    cvm_ids: list[str]
    credentials: list[tuple[Any, ...]]
    shards: list[Path]
    cert_seconds: float
    copy_seconds: float = 0.0


def issue_agents(data_dir: Path, *, agents: int, shards: int, seed: int) -> Fill:
    """Issue the certificates with the service's own CA and sealing code, and write each
    client process's share of the agents to a file. Both servers read this CA."""
    rng = random.Random(seed)  # test data, not security
    ca = load_or_create_ca(data_dir)  # where ``agents --data-dir`` finds it
    sealer = sealer_from(None, data_dir)
    now = datetime.now(UTC)
    cvm_ids: list[str] = []
    credentials: list[tuple[Any, ...]] = []
    for_clients: list[list[list[str]]] = [[] for _ in range(shards)]
    started = time.perf_counter()
    for index in range(agents):
        cvm_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        issued = ca.issue_client(cvm_id, DOMAIN, CERT_VALIDITY, now)
        credentials.append(
            (
                cvm_id,
                format(issued.serial, "x"),
                issued.cert_pem.decode(),
                sealer.seal(issued.key_pem, bound_to=cvm_id),
                issued.not_before,
                issued.not_after,
            )
        )
        for_clients[index % shards].append(
            [cvm_id, issued.cert_pem.decode(), issued.key_pem.decode()]
        )
        cvm_ids.append(cvm_id)
    cert_seconds = time.perf_counter() - started

    paths = []
    for index, share in enumerate(for_clients):
        path = data_dir / f"bench-agents-{index}.json"
        path.write_text(json.dumps(share))
        paths.append(path)
    return Fill(cvm_ids=cvm_ids, credentials=credentials, shards=paths, cert_seconds=cert_seconds)


def copy_into_store(conninfo: str, fill: Fill) -> None:
    """COPY the CVMs and their credentials, then VACUUM ANALYZE, as a store that has been
    running a while would be."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn:
        cvm_rows = (
            (
                cvm_id,
                DOMAIN,
                f"agent-{index:05d}",
                "external",
                "sev-snp" if index % 5 < 3 else "tdx",
                2,
                "info",
                cvm_id,
                "provisioned",
                "starting",  # what a create leaves until the agent answers
                1800,
                "2026-11",
                now,
                now,
                hashlib.sha256(cvm_id.encode()).hexdigest(),
            )
            for index, cvm_id in enumerate(fill.cvm_ids)
        )
        copy_model_rows(conn, CVM, CVM_COLUMNS, cvm_rows)
        copy_model_rows(conn, AgentCredential, CREDENTIAL_COLUMNS, fill.credentials)
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) cvms, agent_credentials")
    fill.copy_seconds = time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class StoreCounts:
    sessions: int
    answered: int  # sessions whose agent answered a heartbeat
    running: int

    @staticmethod
    def read(conn: psycopg.Connection[Any]) -> StoreCounts:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM agent_sessions),"
            " (SELECT count(*) FROM agent_sessions WHERE last_seen_at IS NOT NULL),"
            " (SELECT count(*) FROM cvms WHERE domain_id = %s AND deleted_at IS NULL"
            "  AND status = 'running')",
            (DOMAIN,),
        ).fetchone()
        assert row is not None
        return StoreCounts(sessions=int(row[0]), answered=int(row[1]), running=int(row[2]))


# --- The servers ---------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setup:
    """What the run of every server kind shares: the options, the data directory (the CA,
    the server certificate, each client process's agents), the store (ours only) and the
    open-files limits."""

    args: argparse.Namespace
    data_dir: Path
    fill: Fill
    database_url: str
    conninfo: str
    server_nofile: int
    client_nofile: int


class ServerProcess:
    """A server under test in a subprocess of its own session (Ctrl-C reaches us, and we
    stop it in order), with its open-files limit raised to hold one socket per stream.

    A kind says how to start it and where its sessions and running CVMs are counted; the
    ramp, the rounds and the tables are the same for every kind."""

    kind: ClassVar[str]  # the name --server takes and the results use
    title: ClassVar[str]  # how the tables name its process
    counted_where: ClassVar[str]  # where its sessions and running CVMs are counted
    keeps_store: ClassVar[bool]

    def __init__(self, setup: Setup) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = setup.data_dir / f"{self.kind}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(setup),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(setup),
            cwd=REPO_ROOT,  # where ``python -m bench...`` finds the package
            start_new_session=True,
            preexec_fn=functools.partial(set_nofile, setup.server_nofile),
        )
        self.pid = self.process.pid

    def command(self, setup: Setup) -> list[str]:
        raise NotImplementedError

    def environment(self, setup: Setup) -> dict[str, str]:
        return child_env()

    def settings_text(self, args: argparse.Namespace) -> str:
        return f"heartbeat {args.heartbeat:g}s"

    def counts(self, clients: Clients) -> StoreCounts:
        """The sessions and the running CVMs now."""
        raise NotImplementedError

    def wait_offline(self, timeout: float, *, since: float) -> dict[str, Any] | None:
        """After the clients began to leave at ``since``: how the store emptied (None for a
        server without one)."""
        return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the gRPC port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1.0):
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"the {self.title} endpoint was not up within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the {self.title} process exited {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_lines(self) -> int:
        self._log.flush()
        return len(self.log_path.read_text(errors="replace").splitlines())

    def errors(self) -> dict[str, int]:
        """What went wrong in the server process, from its log: each logged error message
        (``... ERROR logger: message``) and each exception a traceback ended with."""
        self._log.flush()
        found: Counter[str] = Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if " ERROR " in line:
                found[line.split(" ERROR ", 1)[1][:200]] += 1
            elif EXCEPTION_LINE.match(line):
                found[line[:200]] += 1
        return dict(found)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


class AgentsServer(ServerProcess):
    """Ours: ``prism-backends agents`` on the benchmark's store."""

    kind = "ours"
    title = "agents"
    counted_where = "in the store"
    keeps_store = True

    def __init__(self, setup: Setup) -> None:
        self.conninfo = setup.conninfo
        self._store: psycopg.Connection[Any] | None = None
        super().__init__(setup)

    def command(self, setup: Setup) -> list[str]:
        return cli(
            "agents",
            "--database-url",
            setup.database_url,
            "--agents-port",
            str(self.port),
            "--data-dir",
            str(setup.data_dir),
            "--log-level",
            setup.args.server_log_level,
        )

    def environment(self, setup: Setup) -> dict[str, str]:
        return child_env(
            PRISM_BACKENDS_HEARTBEAT_SECONDS=str(setup.args.heartbeat),
            PRISM_BACKENDS_OFFLINE_AFTER_SECONDS=str(setup.args.offline_after),
        )

    def settings_text(self, args: argparse.Namespace) -> str:
        return f"heartbeat {args.heartbeat:g}s, offline after {args.offline_after:g}s"

    def counts(self, clients: Clients) -> StoreCounts:
        if self._store is None:
            self._store = psycopg.connect(self.conninfo, autocommit=True)
        return StoreCounts.read(self._store)

    def wait_offline(self, timeout: float, *, since: float) -> dict[str, Any] | None:
        print(f"waiting up to {timeout:g}s for the store", flush=True)
        return wait_offline(self.conninfo, self, timeout, since=since)

    def stop(self) -> None:
        if self._store is not None:
            self._store.close()
        super().stop()


class AnchorServer(ServerProcess):
    """The bare anchor (``bench.agents_anchor``): the same TLS, options and heartbeat, no
    store. It keeps no sessions, so a stream the clients hold open counts as one session
    and one running CVM."""

    kind = "anchor"
    title = "anchor"
    counted_where = "(the streams the clients hold)"
    keeps_store = False

    def command(self, setup: Setup) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.agents_anchor",
            "--data-dir",
            str(setup.data_dir),
            "--port",
            str(self.port),
            "--heartbeat",
            str(setup.args.heartbeat),
        ]

    def counts(self, clients: Clients) -> StoreCounts:
        held = clients.total(OPEN)
        return StoreCounts(sessions=held, answered=held, running=held)


# In the order they run: ours first, then its anchor.
SERVER_KINDS: dict[str, type[ServerProcess]] = {
    kind.kind: kind for kind in (AgentsServer, AnchorServer)
}


class Clients:
    """The client processes, and the shared counters they write."""

    def __init__(self, jobs: list[ClientJob]) -> None:
        context = multiprocessing.get_context("spawn")
        self.jobs = jobs
        self.counters: Any = context.RawArray("q", len(jobs) * FIELDS)
        self.start_event = context.Event()
        self.stop_event = context.Event()
        self.processes: list[SpawnProcess] = [
            context.Process(
                target=client_process,
                args=(job, self.counters, self.start_event, self.stop_event),
                name=f"bench-agents-client-{job.index}",
                daemon=True,
            )
            for job in jobs
        ]
        for process in self.processes:
            process.start()

    def total(self, slot: int) -> int:
        return sum(self.counters[i * FIELDS + slot] for i in range(len(self.jobs)))

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.is_alive():
                raise RuntimeError(f"client process {process.name} exited {process.exitcode}")

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.total(READY) < len(self.jobs):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the client processes were not ready within {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + 60
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(10)

    def reports(self) -> list[dict[str, Any]]:
        found = []
        for job in self.jobs:
            with suppress(OSError, ValueError):
                found.append(json.loads(job.report.read_text()))
        return found


# --- The measurements ----------------------------------------------------------------------


@dataclass
class Ramp:
    target: int
    seconds_all_open: float | None = None  # every client saw its stream's first agentStateReq
    seconds_all_sessions: float | None = None
    seconds_all_running: float | None = None
    max_open: int = 0
    max_running: int = 0
    timed_out: bool = False
    # The server's CPU from the start until every stream was open (or the ramp gave up),
    # and the streams opened by then: what a connect costs it.
    cpu_seconds_until_all_open: float | None = None
    streams_opened_until_all_open: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)


def ramp_up(server: ServerProcess, clients: Clients, args: argparse.Namespace) -> Ramp:
    """Start the clients together; poll until every stream is open and every CVM running."""
    ramp = Ramp(target=args.agents)
    cpu_at_start = cpu_ticks(server.pid)
    started = time.perf_counter()
    clients.start_event.set()
    next_print = 0.0
    last_print_at = time.time()
    while True:
        time.sleep(0.25)
        elapsed = time.perf_counter() - started
        server.check_alive()
        clients.check_alive()
        opened = clients.total(OPEN)
        counts = server.counts(clients)
        ramp.max_open = max(ramp.max_open, opened)
        ramp.max_running = max(ramp.max_running, counts.running)
        if ramp.seconds_all_open is None and clients.total(EVER_OPENED) >= ramp.target:
            ramp.seconds_all_open = elapsed
            note_connect_cpu(ramp, server, clients, cpu_at_start)
        if ramp.seconds_all_sessions is None and counts.sessions >= ramp.target:
            ramp.seconds_all_sessions = elapsed
        if ramp.seconds_all_running is None and counts.running >= ramp.target:
            ramp.seconds_all_running = elapsed
        done = None not in (
            ramp.seconds_all_open,
            ramp.seconds_all_sessions,
            ramp.seconds_all_running,
        )
        if elapsed >= next_print or done:
            next_print = elapsed + 5.0
            now = time.time()
            slot = int(now // STATS_INTERVAL) != int(last_print_at // STATS_INTERVAL)
            last_print_at = now
            rss_mib = status_kib(server.pid, "VmRSS") / 1024
            agents_cpu = cpu_ticks(server.pid) / CLOCK_TICKS
            ramp.timeline.append(
                {
                    "seconds": round(elapsed, 2),
                    "utc": datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S"),
                    "streams_open": opened,
                    "sessions": counts.sessions,
                    "running": counts.running,
                    "connect_failures": clients.total(CONNECT_FAILURES),
                    "rss_mib": round(rss_mib, 1),
                    "agents_cpu_seconds": round(agents_cpu, 2),
                    "sample_slot_since_last": slot,
                    "load_1min": round(os.getloadavg()[0], 2),
                }
            )
            print(
                f"  {elapsed:6.1f}s  streams open {opened:>6,}  sessions {counts.sessions:>6,}  "
                f"running {counts.running:>6,}  connect failures "
                f"{clients.total(CONNECT_FAILURES):,}  {server.title} RSS {rss_mib:,.0f} MiB, "
                f"CPU {agents_cpu:,.0f} s, load {os.getloadavg()[0]:.1f}"
                f"{'  (sample slot)' if slot else ''}",
                flush=True,
            )
        if done:
            return ramp
        if elapsed > args.connect_timeout:
            ramp.timed_out = True
            if ramp.cpu_seconds_until_all_open is None:
                note_connect_cpu(ramp, server, clients, cpu_at_start)
            print(f"  not all connected within {args.connect_timeout:.0f}s", flush=True)
            return ramp


def note_connect_cpu(ramp: Ramp, server: ServerProcess, clients: Clients, since: int) -> None:
    ramp.cpu_seconds_until_all_open = (cpu_ticks(server.pid) - since) / CLOCK_TICKS
    ramp.streams_opened_until_all_open = clients.total(EVER_OPENED)


@dataclass
class Round:
    seconds: float
    agents_cpu_seconds: float
    state_requests: int
    answers: int
    postgres_cpu_seconds: float
    clients_cpu_seconds: float
    machine_busy_percent: float
    open_at_end: int
    running_at_end: int
    sessions_at_end: int
    drops: int
    crossed_sampling_slot: bool


def measure_rounds(
    server: ServerProcess,
    clients: Clients,
    *,
    rounds: int,
    heartbeat: float,
    stats_interval: int,
) -> list[Round]:
    """``rounds`` windows of one heartbeat interval each, back to back."""
    measured = []
    client_pids = clients.pids()
    agents_before = cpu_ticks(server.pid)
    postgres_before = postgres_ticks()
    clients_before = sum(cpu_ticks(p) for p in client_pids)
    machine_before = machine_ticks()
    requests_before = clients.total(STATE_REQUESTS)
    answers_before = clients.total(ANSWERS)
    drops_before = clients.total(DROPS)
    window_start = time.perf_counter()
    wall_start = time.time()
    for number in range(rounds):
        time.sleep(max(0.0, window_start + heartbeat * (number + 1) - time.perf_counter()))
        window_end = time.perf_counter()
        wall_end = time.time()
        agents_after = cpu_ticks(server.pid)
        postgres_after = postgres_ticks()
        clients_after = sum(cpu_ticks(p) for p in client_pids)
        machine_after = machine_ticks()
        requests_after = clients.total(STATE_REQUESTS)
        answers_after = clients.total(ANSWERS)
        drops_after = clients.total(DROPS)
        opened = clients.total(OPEN)
        counts = server.counts(clients)
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        measured.append(
            Round(
                seconds=round(window_end - (window_start + heartbeat * number), 3),
                agents_cpu_seconds=(agents_after - agents_before) / CLOCK_TICKS,
                state_requests=requests_after - requests_before,
                answers=answers_after - answers_before,
                postgres_cpu_seconds=sum(
                    ticks - postgres_before.get(pid, 0) for pid, ticks in postgres_after.items()
                )
                / CLOCK_TICKS,
                clients_cpu_seconds=(clients_after - clients_before) / CLOCK_TICKS,
                machine_busy_percent=round(100 * busy / total, 1) if total else 0.0,
                open_at_end=opened,
                running_at_end=counts.running,
                sessions_at_end=counts.sessions,
                drops=drops_after - drops_before,
                crossed_sampling_slot=math.floor(wall_start / stats_interval)
                != math.floor(wall_end / stats_interval),
            )
        )
        print(
            f"  round {number + 1}: {server.title} CPU {measured[-1].agents_cpu_seconds:.2f}s, "
            f"{measured[-1].state_requests:,} agentStateReq, running {counts.running:,}",
            flush=True,
        )
        agents_before, postgres_before, clients_before = (
            agents_after,
            postgres_after,
            clients_after,
        )
        machine_before = machine_after
        requests_before, answers_before, drops_before = requests_after, answers_after, drops_after
        wall_start = wall_end
    return measured


def wait_offline(
    conninfo: str, server: ServerProcess, timeout: float, *, since: float
) -> dict[str, Any]:
    """After the agents left (the clients began to close at ``since``): how long until no
    CVM is running and no session is left (each stream's end is one transaction of the
    agents process). A CVM still running without a session is one the reaper cannot find
    any more (it looks at sessions)."""
    deadline = time.perf_counter() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            counts = StoreCounts.read(conn)
            now = time.perf_counter()
            elapsed = now - since
            if (counts.running == 0 and counts.sessions == 0) or now > deadline:
                break
            if server.process.poll() is not None:
                break
            time.sleep(0.25)
        orphans = conn.execute(
            "SELECT count(*) FROM cvms c WHERE domain_id = %s AND deleted_at IS NULL"
            " AND status = 'running'"
            " AND NOT EXISTS (SELECT 1 FROM agent_sessions s WHERE s.cvm_id = c.id)",
            (DOMAIN,),
        ).fetchone()
    return {
        "running_without_session": int(orphans[0]) if orphans else None,
        "seconds": round(elapsed, 2) if counts.running == 0 and counts.sessions == 0 else None,
        "waited_seconds": round(elapsed, 2),
        "still_running": counts.running,
        "sessions_left": counts.sessions,
    }


# --- Output --------------------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"{'measure':<{width}}  value", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def rounds_table(rounds: list[Round], title: str) -> str:
    header = (
        f"{'round':>5} {'seconds':>8} {title + ' CPU s':>12} {'reqs':>7} {'answers':>7} "
        f"{'postgres CPU s':>14} {'clients CPU s':>13} {'machine busy':>12} {'running':>7} "
        f"{'sample slot':>11}"
    )
    lines = [header, "-" * len(header)]
    for number, r in enumerate(rounds, 1):
        lines.append(
            f"{number:>5} {r.seconds:>8.2f} {r.agents_cpu_seconds:>12.2f} {r.state_requests:>7} "
            f"{r.answers:>7} {r.postgres_cpu_seconds:>14.2f} {r.clients_cpu_seconds:>13.2f} "
            f"{r.machine_busy_percent:>11.1f}% {r.running_at_end:>7} "
            f"{'yes' if r.crossed_sampling_slot else 'no':>11}"
        )
    return "\n".join(lines)


# --- Options -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.agents_streams",
        description="Concurrent mTLS agent streams on one 'prism-backends agents' process.",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="SQLAlchemy URL of the benchmark's own database, DROPPED and recreated; "
        "its name must contain 'bench' (default: %(default)s)",
    )
    parser.add_argument(
        "--admin-database",
        default="postgres",
        help="database to connect to for DROP/CREATE DATABASE (default: %(default)s)",
    )
    parser.add_argument(
        "--server",
        choices=(*SERVER_KINDS, "both"),
        default="both",
        help="the server(s) to measure, one after the other: ours ('prism-backends agents'), "
        "the bare anchor (bench.agents_anchor), or both and their comparison "
        "(default: %(default)s)",
    )
    parser.add_argument("--agents", type=int, default=10_000, help="concurrent agent streams")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="client processes sharing the agents (default: %(default)s)",
    )
    parser.add_argument(
        "--connect-in-flight",
        type=int,
        default=64,
        help="connects in flight per client process; open streams are not bounded "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        help="the server's heartbeat_seconds (default: %(default)s, the service's default)",
    )
    parser.add_argument(
        "--offline-after",
        type=float,
        help="the server's offline_after_seconds (default: 30, the service's default, "
        "or 3 heartbeats if longer)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="heartbeat intervals measured (default: %(default)s)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds between all running and the measured rounds (default: one heartbeat)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=900.0,
        help="give up waiting for all streams after this many seconds, and measure what "
        "is connected then (default: %(default)s)",
    )
    parser.add_argument(
        "--disconnect-wait",
        type=float,
        default=60.0,
        help="after the clients leave, wait this long for every CVM to be offline "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the CVM ids")
    parser.add_argument(
        "--server-log-level",
        default="warning",
        help="the agents process's --log-level (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    for name in ("agents", "client_processes", "connect_in_flight", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.heartbeat <= 0 or args.connect_timeout <= 0:
        parser.error("--heartbeat and --connect-timeout must be > 0")
    args.client_processes = min(args.client_processes, args.agents)
    if args.offline_after is None:
        args.offline_after = max(30.0, 3 * args.heartbeat)
    if args.settle is None:
        args.settle = args.heartbeat
    url = make_url(args.database_url)
    if not url.drivername.startswith("postgresql") or not url.database:
        parser.error("--database-url must be a PostgreSQL URL with a database name")
    if "bench" not in url.database:
        parser.error(f"refusing to drop database {url.database!r}: its name must contain 'bench'")
    return args


# --- One server kind -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The server once every stream was open (or the ramp gave up)."""

    rss_kib: int
    threads: int
    open_files: int
    cpu_seconds_so_far: float
    streams_open: int

    @staticmethod
    def read(server: ServerProcess, clients: Clients) -> Connected:
        return Connected(
            rss_kib=status_kib(server.pid, "VmRSS"),
            threads=int(status_value(server.pid, "Threads") or 0),
            open_files=open_files(server.pid),
            cpu_seconds_so_far=cpu_ticks(server.pid) / CLOCK_TICKS,
            streams_open=clients.total(OPEN),
        )


@dataclass(frozen=True, slots=True)
class Measured:
    """What the streams cost the server while the clients held them."""

    ramp: Ramp
    connected: Connected
    rounds: list[Round]
    rss_after_rounds_kib: int
    final: StoreCounts
    log_lines_during_rounds: int
    errors_until_after_rounds: dict[str, int]


@dataclass(frozen=True, slots=True)
class Departure:
    """What is known once the clients left."""

    clients_rss_kib: int  # just before they left
    connect_failures: int
    offline: dict[str, Any] | None
    log_tail: str
    errors: dict[str, int]  # the whole run, until the clients left
    rss_peak_kib: int | None


@dataclass(frozen=True, slots=True)
class ClientOutcome:
    """The client processes' reports, merged."""

    errors: Counter[str]
    samples: dict[str, str]
    connect_seconds: list[float]  # sorted
    # When the failed attempts ended: seconds after their connect began (or, for a stream
    # that dropped, after it opened).
    error_timing: dict[str, dict[str, float | None]]

    @staticmethod
    def merge(reports: list[dict[str, Any]]) -> ClientOutcome:
        errors: Counter[str] = Counter()
        samples: dict[str, str] = {}
        connect_seconds: list[float] = []
        error_after: dict[str, list[float]] = {}
        for report in reports:
            errors.update(report.get("errors", {}))
            for kind, text in report.get("error_samples", {}).items():
                samples.setdefault(kind, text)
            connect_seconds.extend(report.get("connect_seconds", []))
            for kind, seconds in report.get("error_after_seconds", {}).items():
                error_after.setdefault(kind, []).extend(seconds)
        timing = {
            kind: {"min": min(values), "p50": percentile(sorted(values), 0.5), "max": max(values)}
            for kind, values in error_after.items()
        }
        return ClientOutcome(errors, samples, sorted(connect_seconds), timing)


@dataclass(frozen=True, slots=True)
class KindRun:
    """One server kind's figures (``summary``), and the ramp and rounds behind them."""

    summary: dict[str, Any]
    ramp: Ramp
    rounds: list[Round]


def start_server(kind: type[ServerProcess], setup: Setup, cleanup: ExitStack) -> ServerProcess:
    server = kind(setup)
    cleanup.callback(server.stop)
    server.wait_ready()
    time.sleep(1.0)  # past the start-up work, so that "idle" is idle
    return server


def start_clients(server: ServerProcess, setup: Setup, cleanup: ExitStack) -> Clients:
    """Fresh client processes for this server, loaded and waiting for the start."""
    args = setup.args
    jobs = [
        ClientJob(
            index=index,
            shard=shard,
            ca_cert=setup.data_dir / CA_CERT_FILE,
            address=server.address,
            connect_in_flight=args.connect_in_flight,
            nofile=setup.client_nofile,
            report=setup.data_dir / f"bench-client-{server.kind}-{index}.report.json",
        )
        for index, shard in enumerate(setup.fill.shards)
    ]
    clients = Clients(jobs)
    cleanup.callback(clients.stop)
    clients.wait_ready()
    print(
        f"{args.client_processes} client processes ready "
        f"(~{args.agents // args.client_processes:,} agents each, "
        f"{args.connect_in_flight} connects in flight each); starting the streams",
        flush=True,
    )
    return clients


def measure_streams(server: ServerProcess, clients: Clients, args: argparse.Namespace) -> Measured:
    """Ramp up, settle, then the heartbeat rounds."""
    try:
        ramp = ramp_up(server, clients, args)
        connected = Connected.read(server, clients)
        print(
            f"connected: RSS {connected.rss_kib / 1024:.0f} MiB, "
            f"{connected.threads} threads, {connected.open_files:,} open files; "
            f"settling {args.settle:g}s, then {args.rounds} heartbeat intervals",
            flush=True,
        )
        time.sleep(args.settle)
        log_lines_before = server.log_lines()
        rounds = measure_rounds(
            server,
            clients,
            rounds=args.rounds,
            heartbeat=args.heartbeat,
            stats_interval=STATS_INTERVAL,
        )
        return Measured(
            ramp=ramp,
            connected=connected,
            rounds=rounds,
            rss_after_rounds_kib=status_kib(server.pid, "VmRSS"),
            final=server.counts(clients),
            log_lines_during_rounds=server.log_lines() - log_lines_before,
            errors_until_after_rounds=server.errors(),
        )
    except BaseException:
        with suppress(Exception):
            print(f"--- {server.title} log tail ---\n{server.log_tail()}", file=sys.stderr)
        raise


def let_clients_leave(
    server: ServerProcess, clients: Clients, args: argparse.Namespace
) -> tuple[Departure, ClientOutcome]:
    clients_rss_kib = sum(status_kib(pid, "VmRSS") for pid in clients.pids())
    leaving = time.perf_counter()
    clients.stop()
    outcome = ClientOutcome.merge(clients.reports())
    print(f"clients gone in {time.perf_counter() - leaving:.1f}s", flush=True)
    offline = server.wait_offline(args.disconnect_wait, since=leaving)
    departure = Departure(
        clients_rss_kib=clients_rss_kib,
        connect_failures=clients.total(CONNECT_FAILURES),
        offline=offline,
        log_tail=server.log_tail(15),
        errors=server.errors(),
        rss_peak_kib=status_kib(server.pid, "VmHWM") if server.process.poll() is None else None,
    )
    return departure, outcome


def run_server_kind(kind: type[ServerProcess], setup: Setup) -> KindRun:
    """One server kind from start to stop, with fresh clients; prints its tables."""
    args = setup.args
    print(f"\n=== {kind.kind}: the {kind.title} process ===", flush=True)
    with ExitStack() as cleanup:
        server = start_server(kind, setup, cleanup)
        rss_idle_kib = status_kib(server.pid, "VmRSS")
        print(
            f"{server.title} endpoint on {server.address} (pid {server.pid}, open files "
            f"{nofile_limit(server.pid)}, {server.settings_text(args)}), "
            f"RSS idle {rss_idle_kib / 1024:.0f} MiB",
            flush=True,
        )
        clients = start_clients(server, setup, cleanup)
        measured = measure_streams(server, clients, args)
        departure, outcome = let_clients_leave(server, clients, args)
    summary = summarize(kind, rss_idle_kib, measured, departure, outcome, args)
    print_kind_report(kind, setup, summary, measured, departure, outcome)
    return KindRun(summary=summary, ramp=measured.ramp, rounds=measured.rounds)


# --- The summary ---------------------------------------------------------------------------


def per_mille(seconds: float | None, count: int) -> float | None:
    """Seconds per item, in milliseconds."""
    return None if seconds is None or not count else round(1000 * seconds / count, 3)


def ramp_figures(measured: Measured, outcome: ClientOutcome, args: argparse.Namespace) -> Summary:
    ramp, connect = measured.ramp, outcome.connect_seconds
    return {
        "agents_target": args.agents,
        "streams_open_reached": measured.connected.streams_open,
        "max_running_reached": ramp.max_running,
        "all_reached": not ramp.timed_out,
        "seconds_until_all_streams_open": ramp.seconds_all_open,
        "seconds_until_all_sessions": ramp.seconds_all_sessions,
        "seconds_until_all_running": ramp.seconds_all_running,
        "connect_seconds_p50": percentile(connect, 0.5),
        "connect_seconds_p99": percentile(connect, 0.99),
        "connect_seconds_max": connect[-1] if connect else None,
        "server_cpu_seconds_until_all_open": ramp.cpu_seconds_until_all_open,
        "streams_opened_until_all_open": ramp.streams_opened_until_all_open,
        "server_cpu_ms_per_connect": per_mille(
            ramp.cpu_seconds_until_all_open, ramp.streams_opened_until_all_open
        ),
    }


def memory_figures(rss_idle_kib: int, measured: Measured, departure: Departure) -> Summary:
    connected, reached = measured.connected, measured.connected.streams_open
    return {
        "rss_idle_mib": round(rss_idle_kib / 1024, 1),
        "rss_connected_mib": round(connected.rss_kib / 1024, 1),
        "rss_after_rounds_mib": round(measured.rss_after_rounds_kib / 1024, 1),
        "rss_peak_mib": None
        if departure.rss_peak_kib is None
        else round(departure.rss_peak_kib / 1024, 1),
        "rss_per_stream_kib": round((connected.rss_kib - rss_idle_kib) / reached, 1)
        if reached
        else None,
        "server_threads_connected": connected.threads,
        "server_open_files_connected": connected.open_files,
        "server_cpu_seconds_until_connected": connected.cpu_seconds_so_far,
    }


def cpu_figures(measured: Measured) -> Summary:
    rounds, reached = measured.rounds, measured.connected.streams_open
    cpu_total = sum(r.agents_cpu_seconds for r in rounds)
    observed_rounds = sum(r.state_requests for r in rounds) / reached if reached else 0.0
    per_round = cpu_total / observed_rounds if observed_rounds else None
    quiet = [r.agents_cpu_seconds for r in rounds if not r.crossed_sampling_slot]
    return {
        "agents_cpu_seconds_per_heartbeat_interval": cpu_total / len(rounds),
        "agents_cpu_seconds_per_interval_without_sample_slot": (
            sum(quiet) / len(quiet) if quiet else None
        ),
        "intervals_without_sample_slot": len(quiet),
        "heartbeat_rounds_observed": round(observed_rounds, 2),
        "agents_cpu_seconds_per_observed_round": per_round,
        "agents_cpu_ms_per_agent_per_round": per_mille(per_round, reached),
        "agents_cpu_percent_of_one_core": round(
            100 * cpu_total / sum(r.seconds for r in rounds), 1
        ),
        "postgres_cpu_seconds_per_heartbeat_interval": sum(r.postgres_cpu_seconds for r in rounds)
        / len(rounds),
        "clients_cpu_seconds_per_heartbeat_interval": sum(r.clients_cpu_seconds for r in rounds)
        / len(rounds),
    }


def health_figures(measured: Measured, departure: Departure, outcome: ClientOutcome) -> Summary:
    rounds, reached = measured.rounds, measured.connected.streams_open
    return {
        "all_stayed_running": all(
            r.running_at_end >= reached and r.open_at_end >= reached and r.drops == 0
            for r in rounds
        ),
        "running_at_end": measured.final.running,
        "sessions_at_end": measured.final.sessions,
        "drops_during_rounds": sum(r.drops for r in rounds),
        "connect_failures": departure.connect_failures,
        "client_errors": dict(outcome.errors),
        "client_error_samples": outcome.samples,
        "client_error_seconds_after_start": outcome.error_timing,
        "clients_rss_mib_total": round(departure.clients_rss_kib / 1024, 1),
        "all_offline_after_clients_left": departure.offline,
        "server_log_lines_during_rounds": measured.log_lines_during_rounds,
        "server_errors_until_after_rounds": measured.errors_until_after_rounds,
        "server_errors_until_clients_left": departure.errors,
    }


def summarize(
    kind: type[ServerProcess],
    rss_idle_kib: int,
    measured: Measured,
    departure: Departure,
    outcome: ClientOutcome,
    args: argparse.Namespace,
) -> Summary:
    return {
        "server": kind.kind,
        **ramp_figures(measured, outcome, args),
        **memory_figures(rss_idle_kib, measured, departure),
        **cpu_figures(measured),
        **health_figures(measured, departure, outcome),
    }


# --- Output of one server kind -------------------------------------------------------------


def optional_text(value: float | None, text: str) -> str:
    return "-" if value is None else text.format(value)


def offline_text(offline: dict[str, Any] | None) -> str:
    if offline is None:
        return "- (no store)"
    if offline["seconds"] is not None:
        return seconds_text(offline["seconds"])
    return (
        f"not within {offline['waited_seconds']:.0f} s "
        f"({offline['still_running']:,} still running, "
        f"{offline['sessions_left']:,} sessions left, "
        f"{offline['running_without_session']:,} running without a session)"
    )


def kind_rows(kind: type[ServerProcess], setup: Setup, s: Summary) -> list[tuple[str, str]]:
    args, title, where = setup.args, kind.title, kind.counted_where
    quiet = s["agents_cpu_seconds_per_interval_without_sample_slot"]
    return [
        ("agents (streams)", f"{s['streams_open_reached']:,} of {args.agents:,} open"),
        ("client processes", f"{args.client_processes}"),
        ("certificates issued + sealed", f"{setup.fill.cert_seconds:.1f} s"),
        ("all streams open", seconds_text(s["seconds_until_all_streams_open"])),
        (f"all sessions {where}", seconds_text(s["seconds_until_all_sessions"])),
        (f"all CVMs running {where}", seconds_text(s["seconds_until_all_running"])),
        (
            "connect time per agent p50 / p99",
            f"{s['connect_seconds_p50'] or 0:.2f} s / {s['connect_seconds_p99'] or 0:.2f} s",
        ),
        (
            f"{title} CPU per connect (until all open)",
            optional_text(s["server_cpu_ms_per_connect"], "{:.2f} ms"),
        ),
        (f"{title} RSS idle", f"{s['rss_idle_mib']:.0f} MiB"),
        (f"{title} RSS all connected", f"{s['rss_connected_mib']:.0f} MiB"),
        (f"{title} RSS after the rounds", f"{s['rss_after_rounds_mib']:.0f} MiB"),
        ("RSS per stream", f"{s['rss_per_stream_kib']} KiB"),
        (
            f"{title} CPU per {args.heartbeat:g}s heartbeat interval",
            f"{s['agents_cpu_seconds_per_heartbeat_interval']:.2f} s "
            f"({s['agents_cpu_percent_of_one_core']:.0f} % of one core)",
        ),
        (
            "  the same, intervals without a sample slot",
            "-"
            if quiet is None
            else f"{quiet:.2f} s ({s['intervals_without_sample_slot']} of {args.rounds} intervals)",
        ),
        (
            "heartbeat rounds observed",
            f"{s['heartbeat_rounds_observed']:.2f} in {args.rounds} intervals",
        ),
        (
            f"{title} CPU per observed round",
            optional_text(s["agents_cpu_seconds_per_observed_round"], "{:.2f} s"),
        ),
        (
            f"{title} CPU per agent per round",
            optional_text(s["agents_cpu_ms_per_agent_per_round"], "{:.3f} ms"),
        ),
        ("postgres CPU per interval", f"{s['postgres_cpu_seconds_per_heartbeat_interval']:.2f} s"),
        ("clients CPU per interval", f"{s['clients_cpu_seconds_per_heartbeat_interval']:.2f} s"),
        (
            "all stayed running",
            f"{'yes' if s['all_stayed_running'] else 'NO'} "
            f"(running {s['running_at_end']:,}, sessions {s['sessions_at_end']:,}, "
            f"drops {s['drops_during_rounds']})",
        ),
        ("connect failures (retried)", f"{s['connect_failures']:,}"),
        (
            "all offline after the clients began to leave",
            offline_text(s["all_offline_after_clients_left"]),
        ),
    ]


def print_kind_report(
    kind: type[ServerProcess],
    setup: Setup,
    summary: Summary,
    measured: Measured,
    departure: Departure,
    outcome: ClientOutcome,
) -> None:
    print()
    print(table(kind_rows(kind, setup, summary)))
    print()
    print(rounds_table(measured.rounds, kind.title))
    if outcome.errors:
        print("\nclient errors:")
        for error, count in outcome.errors.most_common():
            timing = outcome.error_timing.get(error, {})
            print(
                f"  {count:>7,}  {error}: {outcome.samples.get(error, '')} (after "
                f"{timing.get('min') or 0:.1f}-{timing.get('max') or 0:.1f} s, "
                f"median {timing.get('p50') or 0:.1f} s)"
            )
    if departure.errors:
        print(f"\nthe {kind.title} process logged errors (the whole run, until the clients left):")
        for text, count in sorted(departure.errors.items(), key=lambda item: -item[1]):
            print(f"  {count:>5}  {text}")
    if measured.log_lines_during_rounds:
        print(
            f"\nthe {kind.title} process logged {measured.log_lines_during_rounds} lines "
            "during the rounds; its tail:"
        )
        print(departure.log_tail)


# --- Main ----------------------------------------------------------------------------------


def prepare_store(
    admin: str, database: str, database_url: str, data_dir: Path, cleanup: ExitStack
) -> None:
    """Our server's store, recreated and migrated (and dropped by ``cleanup``)."""
    print(f"database {database}: drop, create, migrate", flush=True)
    recreate_database(admin, database)
    cleanup.callback(drop_database, admin, database)
    run_cli("migrate", "--database-url", database_url, "--data-dir", str(data_dir))


def results_meta(setup: Setup, started_at: str, database: str | None) -> dict[str, Any]:
    args = setup.args
    return {
        "benchmark": "agents_streams",
        "started_at": started_at,
        "servers": [kind.kind for kind in selected_kinds(args.server)],
        "database": database,
        "agents": args.agents,
        "client_processes": args.client_processes,
        "connect_in_flight_per_process": args.connect_in_flight,
        "heartbeat_seconds": args.heartbeat,
        "offline_after_seconds": args.offline_after,
        "rounds": args.rounds,
        "settle_seconds": args.settle,
        "certificates_seconds": round(setup.fill.cert_seconds, 2),
        "copy_and_analyze_seconds": round(setup.fill.copy_seconds, 2),
        "server_nofile": setup.server_nofile,
        "client_nofile": setup.client_nofile,
        "server_log_level": args.server_log_level,
        "cpu_count": os.cpu_count(),
        "memory_total_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE_SIZE / 2**30, 1),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "notes": [
            "each server kind runs in turn (ours, then the anchor) with fresh client "
            "processes on the same certificates; the anchor keeps no store, so its "
            "sessions and running CVMs are the streams the clients hold open",
            "server_cpu_ms_per_connect: the server's CPU from the start of the ramp until "
            "every stream was open, divided by the streams opened by then",
            "rounds are windows of one heartbeat interval, back to back; the server's "
            "heartbeat period is its interval plus the time of its renew query, so a "
            "window holds about one round: heartbeat_rounds_observed counts them from "
            "the agentStateReq the clients received",
            "postgres CPU sums every local postgres process alive at a window's end",
            "sample slot: the window crossed a 5-minute boundary, when the agents "
            "process's sampler writes one uptime bit per CVM",
        ],
    }


def selected_kinds(server: str) -> list[type[ServerProcess]]:
    return [kind for name, kind in SERVER_KINDS.items() if server in (name, "both")]


def compare_kinds(runs: dict[str, KindRun], heartbeat: float) -> list[Row] | None:
    """Ours against the anchor, when both ran."""
    if "ours" not in runs or "anchor" not in runs:
        return None
    return compare(runs["ours"].summary, runs["anchor"].summary, heartbeat=heartbeat)


def results_document(
    meta: dict[str, Any], runs: dict[str, KindRun], comparison: list[Row] | None
) -> dict[str, Any]:
    return {
        "meta": meta,
        **{name: run.summary for name, run in runs.items()},
        "ratios": ratios_json(comparison) if comparison else {},
        "targets": targets_json(comparison) if comparison else {},
        "ramps": {name: asdict(run.ramp) for name, run in runs.items()},
        "rounds": {name: [asdict(r) for r in run.rounds] for name, run in runs.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    exit_cleanly_on_signals()
    kinds = selected_kinds(args.server)
    keeps_store = any(kind.keeps_store for kind in kinds)
    url = make_url(args.database_url)
    database = str(url.database)
    database_url = url.render_as_string(hide_password=False)
    conninfo = libpq_conninfo(url)
    admin = libpq_conninfo(url.set(database=args.admin_database))

    with tempfile.TemporaryDirectory(prefix="prism-bench-agents-") as tmp, ExitStack() as cleanup:
        data_dir = Path(tmp)
        if keeps_store:
            prepare_store(admin, database, database_url, data_dir, cleanup)
        print(f"issuing {args.agents:,} client certificates ...", flush=True)
        fill = issue_agents(
            data_dir, agents=args.agents, shards=args.client_processes, seed=args.seed
        )
        print(f"  certificates issued and keys sealed in {fill.cert_seconds:.1f}s", flush=True)
        if keeps_store:  # the anchor reads only the certificates
            copy_into_store(conninfo, fill)
            print(f"  COPY + VACUUM ANALYZE {fill.copy_seconds:.1f}s", flush=True)
        setup = Setup(
            args=args,
            data_dir=data_dir,
            fill=fill,
            database_url=database_url,
            conninfo=conninfo,
            server_nofile=args.agents + FD_MARGIN,
            client_nofile=-(-args.agents // args.client_processes) + FD_MARGIN,
        )
        runs = {kind.kind: run_server_kind(kind, setup) for kind in kinds}

    comparison = compare_kinds(runs, args.heartbeat)
    if comparison:
        print(f"\n=== ours against the anchor ({args.agents:,} agents) ===\n")
        print(comparison_table(comparison))
    meta = results_meta(setup, started_at, database if keeps_store else None)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results_document(meta, runs, comparison), indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
