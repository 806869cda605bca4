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

import json
import signal
import time
from datetime import datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine

from tests.served import (
    DIAL_TIMEOUT,
    DISCONNECT_TIMEOUT,
    DOMAIN,
    FLUSH,
    HEARTBEAT,
    OFFLINE_AFTER,
    REAP_EVERY,
    SESSION_TTL,
    SLACK,
    STATS_INTERVAL,
    Api,
    Processes,
    Sample,
    Spec,
    agents_spec,
    api_spec,
    free_port,
    save_config,
    stored_events,
    stored_session,
    stored_status,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")

# --- 1. the embedded default ----------------------------------------------------------------


def test_an_agent_drives_status_statistics_and_events_until_its_cvm_is_deleted(
    embedded: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    processes = embedded

    def serve() -> Spec:
        http_port, agents_port = free_port(), free_port()
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

    def worker() -> Spec:
        return Spec(["worker"], ready=["lifecycle workers started"])

    # The first replica creates the CA and the endpoint's certificate in the shared data
    # directory; the others start once it has: processes that create them at once each
    # keep a CA of their own (agents/pki.py, load_or_create_ca does not create exclusively).
    replica_a = processes.ready(processes.launch("agents-a", agents_spec))
    others = [
        processes.launch("agents-b", agents_spec),
        processes.launch("api", api_spec),
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
