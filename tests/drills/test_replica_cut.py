"""Drill: one agents replica loses its PostgreSQL while 100 agents stream.

Two ``agents`` replicas (one CA, each logging in as a database role of its
own), an ``api`` and a ``worker`` (the sampler and the liveness reaper) run on
PostgreSQL; 100 agents stream, half to each replica. Replica A's role is cut
off (connections ended, new ones refused) for longer than a session lives.
A must drop its streams so that its agents reconnect (to B); every CVM must
be running again; and no agent that stayed on the healthy replica may get a
single ``offline`` sample.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.drills.conftest import Cluster
from tests.drills.swarm import Swarm, SwarmAgent
from tests.served import (
    DOMAIN,
    SESSION_TTL,
    STATS_INTERVAL,
    Api,
    Processes,
    Spec,
    agents_spec,
    api_spec,
    wait_for,
)

pytestmark = pytest.mark.slow

AGENTS = 100
CUT_SECONDS = 2 * SESSION_TTL
CONVERGE_SECONDS = 20.0


def test_agents_leave_a_replica_that_lost_its_store_and_liveness_converges(
    tmp_path: Path, pycache: Path, cluster: Cluster
) -> None:
    processes = Processes(tmp_path, pycache, database_url=cluster.url(cluster.owner))
    swarms: list[Swarm] = []
    try:
        _drill(processes, cluster, swarms)
    finally:
        for swarm in swarms:
            swarm.stop()
        processes.stop()


def _drill(processes: Processes, cluster: Cluster, swarms: list[Swarm]) -> None:
    token, _ = processes.run_all(("token", "issue", "--domain", DOMAIN), ("migrate",))
    role_a, role_b = cluster.add_role("a"), cluster.add_role("b")

    # A first: it makes the shared CA the others then read.
    replica_a = processes.ready(
        processes.launch("agents-a", lambda: agents_spec("--database-url", cluster.url(role_a)))
    )
    replica_b, http, _ = [
        processes.ready(server)
        for server in (
            processes.launch(
                "agents-b", lambda: agents_spec("--database-url", cluster.url(role_b))
            ),
            processes.launch("api", api_spec),
            processes.launch("worker", lambda: Spec(["worker"], ready=["workers started"])),
        )
    ]
    a, b = (f"127.0.0.1:{server.ports[0]}" for server in (replica_a, replica_b))
    api = Api(f"http://127.0.0.1:{http.ports[0]}/backends", token.strip())
    agents = []
    for index in range(AGENTS):
        cvm_id = api.create_external(f"swarm-{index:03d}")
        agents.append(SwarmAgent.of(api.agent_config(cvm_id), [a, b] if index % 2 else [b, a]))
    on_a = [agent for agent in agents if agent.addresses[0] == a]
    on_b = [agent for agent in agents if agent.addresses[0] == b]
    swarm = Swarm(agents)
    swarms.append(swarm)
    swarm.start()

    def all_running() -> bool:
        return all(api.status(agent.cvm_id) == "running" for agent in agents)

    wait_for("every CVM running", all_running, CONVERGE_SECONDS, processes.tails)
    watched_from = time.time() + STATS_INTERVAL  # the next sample on: every B agent is up

    cut_at = time.monotonic()
    assert cluster.cut(role_a) > 0
    wait_for(
        "A's agents on B",
        lambda: all(agent.current == b for agent in on_a),
        CUT_SECONDS,
        lambda: (
            f"{[(x.current, x.ends[-1:]) for x in on_a if x.current != b]}\n" + processes.tails()
        ),
    )
    moved_in = time.monotonic() - cut_at
    time.sleep(max(0.0, CUT_SECONDS - moved_in))
    cluster.restore(role_a)
    wait_for("every CVM running again", all_running, CONVERGE_SECONDS, processes.tails)
    time.sleep(2 * STATS_INTERVAL)  # samples taken after the cut ended
    watched_to = time.time()

    print(
        f"\n{AGENTS} agents; replica A cut {CUT_SECONDS:.0f} s; its {len(on_a)} agents on B "
        f"{moved_in:.1f} s after the cut; reasons: {sorted({x.ends[0] for x in on_a})}"
    )
    # The agents on the healthy replica never left it, and never looked offline.
    assert all(agent.connects == 1 and not agent.ends for agent in on_b)
    for agent in on_b:
        window = [s for s in api.samples(agent.cvm_id) if watched_from <= s.at <= watched_to]
        assert window, agent.cvm_id
        assert all(sample.up for sample in window), (agent.cvm_id, window)
    # A's agents were told to go elsewhere, and went.
    assert all(agent.ends and "cannot reach the store" in agent.ends[0] for agent in on_a)
    assert replica_a.process.poll() is None and replica_b.process.poll() is None
    api.close()
