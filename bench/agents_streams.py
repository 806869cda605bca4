"""Concurrent agent streams on one ``prism-backends agents`` process.

Usage::

    uv run python -m bench.agents_streams [--agents 10000] [--client-processes N]
        [--heartbeat 10] [--rounds 3]

What it does, in order:

1. drops and recreates its own database (the last path segment of
   ``--database-url``, which must contain ``bench``), then runs
   ``prism-backends migrate`` on it as a subprocess;
2. creates the agents CA in the data directory the server will use, with the
   service's own code (``load_or_create_ca``, ``sealer_from``), issues one client
   certificate per CVM (``AgentCA.issue_client``, as ``CredentialIssuer`` does)
   and fills the store with binary COPY: ``--agents`` provisioned external CVMs
   (status ``starting``, as a create leaves them) and their credentials, the
   private keys sealed as the service seals them;
3. starts ONE ``prism-backends agents`` process as a real subprocess, with its
   open-files limit raised, the heartbeat at ``--heartbeat`` seconds;
4. starts ``--client-processes`` client processes that each open their share of
   the streams: grpc.aio, one channel per agent, each with its own client
   certificate and ``job-id`` metadata, answering every agentStateReq with an
   agentStateRes, and reconnecting with backoff as the reference agent does;
5. measures the time until every stream is open and every CVM is ``running``
   in the database, the agents process's resident memory, and its CPU time
   (utime + stime of /proc/PID/stat) over ``--rounds`` heartbeat intervals,
   checking that every CVM stays running meanwhile;
6. prints a table and writes it as JSON to ``bench/results/agents_streams.json``;
7. stops the clients and the server and drops the database, also on error,
   Ctrl-C or SIGTERM.

It asserts nothing about speed. Clients, server and PostgreSQL share the
machine's cores: the connect time includes their competition, the CPU time of
the agents process (a per-process counter) much less so.
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
from typing import Any

import grpc
import psycopg
from sqlalchemy.engine import make_url

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
    cvm_ids: list[str] = field(default_factory=list)
    cert_seconds: float = 0.0
    copy_seconds: float = 0.0


def fill_database(
    conninfo: str, data_dir: Path, *, agents: int, shards: int, seed: int
) -> tuple[Fill, list[Path]]:
    """Issue the certificates (the service's own CA and sealing code), COPY the CVMs and
    their credentials, and write each client process's share of the agents to a file."""
    rng = random.Random(seed)  # test data, not security
    ca = load_or_create_ca(data_dir)  # where ``agents --data-dir`` finds it
    sealer = sealer_from(None, data_dir)
    now = datetime.now(UTC)
    fill = Fill()
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
        fill.cvm_ids.append(cvm_id)
    fill.cert_seconds = time.perf_counter() - started

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
        copy_model_rows(conn, AgentCredential, CREDENTIAL_COLUMNS, credentials)
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) cvms, agent_credentials")
    fill.copy_seconds = time.perf_counter() - started

    paths = []
    for index, share in enumerate(for_clients):
        path = data_dir / f"bench-agents-{index}.json"
        path.write_text(json.dumps(share))
        paths.append(path)
    return fill, paths


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


# --- The server ----------------------------------------------------------------------------


class AgentsServer:
    """``prism-backends agents`` in a subprocess of its own session."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        *,
        log_level: str,
        heartbeat: float,
        offline_after: float,
        nofile: int,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = data_dir / "agents.log"
        self._log = self.log_path.open("wb")
        env = child_env()
        env["PRISM_BACKENDS_HEARTBEAT_SECONDS"] = str(heartbeat)
        env["PRISM_BACKENDS_OFFLINE_AFTER_SECONDS"] = str(offline_after)
        self.process = subprocess.Popen(
            cli(
                "agents",
                "--database-url",
                database_url,
                "--agents-port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                log_level,
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            preexec_fn=functools.partial(set_nofile, nofile),
        )
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the gRPC port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1.0):
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"the agents endpoint was not up within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the agents process exited {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_lines(self) -> int:
        self._log.flush()
        return len(self.log_path.read_text(errors="replace").splitlines())

    def errors(self) -> dict[str, int]:
        """What went wrong in the agents process, from its log: each logged error message
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
    timeline: list[dict[str, Any]] = field(default_factory=list)


def ramp_up(
    server: AgentsServer, clients: Clients, conn: psycopg.Connection[Any], args: argparse.Namespace
) -> Ramp:
    """Start the clients together; poll until every stream is open and every CVM running."""
    ramp = Ramp(target=args.agents)
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
        counts = StoreCounts.read(conn)
        ramp.max_open = max(ramp.max_open, opened)
        ramp.max_running = max(ramp.max_running, counts.running)
        if ramp.seconds_all_open is None and clients.total(EVER_OPENED) >= ramp.target:
            ramp.seconds_all_open = elapsed
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
                f"{clients.total(CONNECT_FAILURES):,}  agents RSS {rss_mib:,.0f} MiB, "
                f"CPU {agents_cpu:,.0f} s, load {os.getloadavg()[0]:.1f}"
                f"{'  (sample slot)' if slot else ''}",
                flush=True,
            )
        if done:
            return ramp
        if elapsed > args.connect_timeout:
            ramp.timed_out = True
            print(f"  not all connected within {args.connect_timeout:.0f}s", flush=True)
            return ramp


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
    server: AgentsServer,
    clients: Clients,
    conn: psycopg.Connection[Any],
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
        counts = StoreCounts.read(conn)
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
            f"  round {number + 1}: agents CPU {measured[-1].agents_cpu_seconds:.2f}s, "
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
    conninfo: str, server: AgentsServer, timeout: float, *, since: float
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


def rounds_table(rounds: list[Round]) -> str:
    header = (
        f"{'round':>5} {'seconds':>8} {'agents CPU s':>12} {'reqs':>7} {'answers':>7} "
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


# --- Main ----------------------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    exit_cleanly_on_signals()
    url = make_url(args.database_url)
    database = str(url.database)
    database_url = url.render_as_string(hide_password=False)
    conninfo = libpq_conninfo(url)
    admin = libpq_conninfo(url.set(database=args.admin_database))
    server_nofile = args.agents + FD_MARGIN
    client_nofile = -(-args.agents // args.client_processes) + FD_MARGIN

    with tempfile.TemporaryDirectory(prefix="prism-bench-agents-") as tmp, ExitStack() as cleanup:
        data_dir = Path(tmp)
        print(f"database {database}: drop, create, migrate", flush=True)
        recreate_database(admin, database)
        cleanup.callback(drop_database, admin, database)
        run_cli("migrate", "--database-url", database_url, "--data-dir", str(data_dir))

        print(f"issuing {args.agents:,} client certificates and filling the store ...", flush=True)
        fill, shards = fill_database(
            conninfo,
            data_dir,
            agents=args.agents,
            shards=args.client_processes,
            seed=args.seed,
        )
        print(
            f"  certificates issued and keys sealed in {fill.cert_seconds:.1f}s; "
            f"COPY + VACUUM ANALYZE {fill.copy_seconds:.1f}s",
            flush=True,
        )

        server = AgentsServer(
            database_url,
            data_dir,
            log_level=args.server_log_level,
            heartbeat=args.heartbeat,
            offline_after=args.offline_after,
            nofile=server_nofile,
        )
        cleanup.callback(server.stop)
        server.wait_ready()
        time.sleep(1.0)
        rss_idle_kib = status_kib(server.pid, "VmRSS")
        print(
            f"agents endpoint on {server.address} (pid {server.pid}, open files "
            f"{nofile_limit(server.pid)}, heartbeat {args.heartbeat:g}s, offline after "
            f"{args.offline_after:g}s), RSS idle {rss_idle_kib / 1024:.0f} MiB",
            flush=True,
        )

        jobs = [
            ClientJob(
                index=index,
                shard=shard,
                ca_cert=data_dir / CA_CERT_FILE,
                address=server.address,
                connect_in_flight=args.connect_in_flight,
                nofile=client_nofile,
                report=data_dir / f"bench-client-{index}.report.json",
            )
            for index, shard in enumerate(shards)
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

        with psycopg.connect(conninfo, autocommit=True) as conn:
            try:
                ramp = ramp_up(server, clients, conn, args)
                rss_connected_kib = status_kib(server.pid, "VmRSS")
                clients_open_at_connect = clients.total(OPEN)
                connected = {
                    "rss_kib": rss_connected_kib,
                    "hwm_kib": status_kib(server.pid, "VmHWM"),
                    "threads": int(status_value(server.pid, "Threads") or 0),
                    "open_files": open_files(server.pid),
                    "cpu_seconds_so_far": cpu_ticks(server.pid) / CLOCK_TICKS,
                }
                print(
                    f"connected: RSS {rss_connected_kib / 1024:.0f} MiB, "
                    f"{connected['threads']} threads, {connected['open_files']:,} open files; "
                    f"settling {args.settle:g}s, then {args.rounds} heartbeat intervals",
                    flush=True,
                )
                time.sleep(args.settle)
                log_lines_before = server.log_lines()
                rounds = measure_rounds(
                    server,
                    clients,
                    conn,
                    rounds=args.rounds,
                    heartbeat=args.heartbeat,
                    stats_interval=STATS_INTERVAL,
                )
                rss_end_kib = status_kib(server.pid, "VmRSS")
                final = StoreCounts.read(conn)
                server_log_lines = server.log_lines() - log_lines_before
            except BaseException:
                with suppress(Exception):
                    print(f"--- agents log tail ---\n{server.log_tail()}", file=sys.stderr)
                raise
        server_errors_connected = server.errors()
        client_rss_kib = sum(status_kib(pid, "VmRSS") for pid in clients.pids())
        leaving = time.perf_counter()
        clients.stop()
        reports = clients.reports()
        print(
            f"clients gone in {time.perf_counter() - leaving:.1f}s; waiting up to "
            f"{args.disconnect_wait:g}s more for the store",
            flush=True,
        )
        offline = wait_offline(conninfo, server, args.disconnect_wait, since=leaving)
        log_tail = server.log_tail(15)
        server_errors = server.errors()

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
        connect_seconds.sort()
        # When the failed attempts ended: seconds after their connect began (or, for a
        # stream that dropped, after it opened).
        error_timing = {
            kind: {
                "min": min(values),
                "p50": percentile(sorted(values), 0.5),
                "max": max(values),
            }
            for kind, values in error_after.items()
        }

        reached = clients_open_at_connect
        cpu_total = sum(r.agents_cpu_seconds for r in rounds)
        requests_total = sum(r.state_requests for r in rounds)
        observed_rounds = requests_total / reached if reached else 0.0
        window_seconds = sum(r.seconds for r in rounds)
        quiet = [r.agents_cpu_seconds for r in rounds if not r.crossed_sampling_slot]
        summary = {
            "agents_target": args.agents,
            "streams_open_reached": reached,
            "max_running_reached": ramp.max_running,
            "all_reached": not ramp.timed_out,
            "seconds_until_all_streams_open": ramp.seconds_all_open,
            "seconds_until_all_sessions": ramp.seconds_all_sessions,
            "seconds_until_all_running": ramp.seconds_all_running,
            "connect_seconds_p50": percentile(connect_seconds, 0.5),
            "connect_seconds_p99": percentile(connect_seconds, 0.99),
            "connect_seconds_max": connect_seconds[-1] if connect_seconds else None,
            "rss_idle_mib": round(rss_idle_kib / 1024, 1),
            "rss_connected_mib": round(rss_connected_kib / 1024, 1),
            "rss_after_rounds_mib": round(rss_end_kib / 1024, 1),
            "rss_peak_mib": round(status_kib(server.pid, "VmHWM") / 1024, 1)
            if server.process.poll() is None
            else None,
            "rss_per_stream_kib": round((rss_connected_kib - rss_idle_kib) / reached, 1)
            if reached
            else None,
            "agents_cpu_seconds_per_heartbeat_interval": cpu_total / len(rounds),
            "agents_cpu_seconds_per_interval_without_sample_slot": (
                sum(quiet) / len(quiet) if quiet else None
            ),
            "heartbeat_rounds_observed": round(observed_rounds, 2),
            "agents_cpu_seconds_per_observed_round": cpu_total / observed_rounds
            if observed_rounds
            else None,
            "agents_cpu_percent_of_one_core": round(100 * cpu_total / window_seconds, 1),
            "postgres_cpu_seconds_per_heartbeat_interval": sum(
                r.postgres_cpu_seconds for r in rounds
            )
            / len(rounds),
            "clients_cpu_seconds_per_heartbeat_interval": sum(r.clients_cpu_seconds for r in rounds)
            / len(rounds),
            "all_stayed_running": all(
                r.running_at_end >= reached and r.open_at_end >= reached and r.drops == 0
                for r in rounds
            ),
            "running_at_end": final.running,
            "sessions_at_end": final.sessions,
            "drops_during_rounds": sum(r.drops for r in rounds),
            "connect_failures": clients.total(CONNECT_FAILURES),
            "client_errors": dict(errors),
            "client_error_samples": samples,
            "client_error_seconds_after_start": error_timing,
            "clients_rss_mib_total": round(client_rss_kib / 1024, 1),
            "all_offline_after_clients_left": offline,
            "server_log_lines_during_rounds": server_log_lines,
            "server_errors_until_after_rounds": server_errors_connected,
            "server_errors_until_clients_left": server_errors,
        }
        meta = {
            "benchmark": "agents_streams",
            "started_at": started_at,
            "database": database,
            "agents": args.agents,
            "client_processes": args.client_processes,
            "connect_in_flight_per_process": args.connect_in_flight,
            "heartbeat_seconds": args.heartbeat,
            "offline_after_seconds": args.offline_after,
            "rounds": args.rounds,
            "settle_seconds": args.settle,
            "certificates_seconds": round(fill.cert_seconds, 2),
            "copy_and_analyze_seconds": round(fill.copy_seconds, 2),
            "server_nofile": server_nofile,
            "client_nofile": client_nofile,
            "server_log_level": args.server_log_level,
            "server_threads_connected": connected["threads"],
            "server_open_files_connected": connected["open_files"],
            "server_cpu_seconds_until_connected": connected["cpu_seconds_so_far"],
            "cpu_count": os.cpu_count(),
            "memory_total_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE_SIZE / 2**30, 1),
            "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "grpc": grpc.__version__,
            "notes": [
                "rounds are windows of one heartbeat interval, back to back; the server's "
                "heartbeat period is its interval plus the time of its renew query, so a "
                "window holds about one round: heartbeat_rounds_observed counts them from "
                "the agentStateReq the clients received",
                "postgres CPU sums every local postgres process alive at a window's end",
                "sample slot: the window crossed a 5-minute boundary, when the agents "
                "process's sampler writes one uptime bit per CVM",
            ],
        }

    rows = [
        ("agents (streams)", f"{reached:,} of {args.agents:,} open"),
        ("client processes", f"{args.client_processes}"),
        ("certificates issued + sealed", f"{fill.cert_seconds:.1f} s"),
        ("all streams open", seconds_text(ramp.seconds_all_open)),
        ("all sessions in the store", seconds_text(ramp.seconds_all_sessions)),
        ("all CVMs running in the store", seconds_text(ramp.seconds_all_running)),
        (
            "connect time per agent p50 / p99",
            f"{summary['connect_seconds_p50'] or 0:.2f} s / "
            f"{summary['connect_seconds_p99'] or 0:.2f} s",
        ),
        ("agents RSS idle", f"{summary['rss_idle_mib']:.0f} MiB"),
        ("agents RSS all connected", f"{summary['rss_connected_mib']:.0f} MiB"),
        ("agents RSS after the rounds", f"{summary['rss_after_rounds_mib']:.0f} MiB"),
        ("RSS per stream", f"{summary['rss_per_stream_kib']} KiB"),
        (
            f"agents CPU per {args.heartbeat:g}s heartbeat interval",
            f"{summary['agents_cpu_seconds_per_heartbeat_interval']:.2f} s "
            f"({summary['agents_cpu_percent_of_one_core']:.0f} % of one core)",
        ),
        (
            "  the same, intervals without a sample slot",
            "-"
            if summary["agents_cpu_seconds_per_interval_without_sample_slot"] is None
            else f"{summary['agents_cpu_seconds_per_interval_without_sample_slot']:.2f} s "
            f"({len(quiet)} of {len(rounds)} intervals)",
        ),
        (
            "heartbeat rounds observed",
            f"{observed_rounds:.2f} in {args.rounds} intervals",
        ),
        (
            "agents CPU per observed round",
            "-"
            if summary["agents_cpu_seconds_per_observed_round"] is None
            else f"{summary['agents_cpu_seconds_per_observed_round']:.2f} s",
        ),
        (
            "postgres CPU per interval",
            f"{summary['postgres_cpu_seconds_per_heartbeat_interval']:.2f} s",
        ),
        (
            "clients CPU per interval",
            f"{summary['clients_cpu_seconds_per_heartbeat_interval']:.2f} s",
        ),
        (
            "all stayed running",
            f"{'yes' if summary['all_stayed_running'] else 'NO'} "
            f"(running {final.running:,}, sessions {final.sessions:,}, "
            f"drops {summary['drops_during_rounds']})",
        ),
        ("connect failures (retried)", f"{summary['connect_failures']:,}"),
        (
            "all offline after the clients began to leave",
            seconds_text(offline["seconds"])
            if offline["seconds"] is not None
            else f"not within {offline['waited_seconds']:.0f} s "
            f"({offline['still_running']:,} still running, "
            f"{offline['sessions_left']:,} sessions left, "
            f"{offline['running_without_session']:,} running without a session)",
        ),
    ]
    print()
    print(table(rows))
    print()
    print(rounds_table(rounds))
    if errors:
        print("\nclient errors:")
        for kind, count in errors.most_common():
            timing = error_timing.get(kind, {})
            print(
                f"  {count:>7,}  {kind}: {samples.get(kind, '')} (after "
                f"{timing.get('min', 0):.1f}-{timing.get('max', 0):.1f} s, "
                f"median {timing.get('p50') or 0:.1f} s)"
            )
    if server_errors:
        print("\nthe agents process logged errors (the whole run, until the clients left):")
        for text, count in sorted(server_errors.items(), key=lambda item: -item[1]):
            print(f"  {count:>5}  {text}")
    if server_log_lines:
        print(f"\nthe agents process logged {server_log_lines} lines during the rounds; its tail:")
        print(log_tail)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "summary": summary,
        "ramp": asdict(ramp),
        "rounds": [asdict(r) for r in rounds],
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
