"""Chaos with each cloud's real driver: API and worker processes on PostgreSQL,
workers SIGKILLed at random, while the driver talks through its official SDK
to that cloud's fake (moto's EC2 behind a ClientToken-keeping front, the
Compute Engine fake, the ARM fake), each slow and failing at random, before
or after it made the machine. After the killing stops every CVM converges,
no CVM ever had two machines made, and the cloud holds exactly the machines
of the provisioned CVMs (for Azure: nor any NIC, IP or disk of another).

Run it with: PRISM_BACKENDS_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
uv run pytest -m slow tests/lifecycle/test_chaos_clouds.py -s
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine

from prism_backends.providers import cloud
from tests.fakes import azure_arm, ec2_front, gcp_compute
from tests.fakes.chaos import Chaos
from tests.lifecycle.test_chaos import (  # noqa: F401 - cluster is a fixture
    DOMAIN,
    WORKERS,
    Api,
    Cluster,
    cluster,
    make_chaos,
    pytestmark,
    unconverged,
    wait_converged,
)

CVM_COUNT = 60
SUBNET = (
    "/subscriptions/sub-chaos/resourceGroups/prism/providers/Microsoft.Network"
    "/virtualNetworks/prism/subnets/default"
)
TROUBLE = {"rate": 0.2, "after_create_share": 0.5, "latency_seconds": (0.02, 0.3)}


@dataclass
class Cloud:
    """A cloud's fake as the test sees it: the provider file that points the
    real driver at it, and what it holds."""

    name: str
    provider_toml: str
    creations: Callable[[], Counter[str]]  # CVM id -> machines ever made for it
    live: Callable[[], dict[str, list[str]]]  # CVM id -> its live machines' ids
    leftovers: Callable[[], list[str]] = list  # other resources no live machine owns
    env: dict[str, str] | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _aws() -> Iterator[Cloud]:
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    front = ec2_front.Ec2Front(f"http://127.0.0.1:{port}", chaos=Chaos(**TROUBLE))  # type: ignore[arg-type]
    server, url = ec2_front.serve(front)
    ec2 = boto3.client(
        "ec2",
        region_name="us-east-2",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )
    image = ec2.describe_images()["Images"][0]["ImageId"]

    def instances() -> list[dict[str, Any]]:
        pages = ec2.get_paginator("describe_instances").paginate()
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def cvm_of(instance: dict[str, Any]) -> str:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        return str(tags.get(cloud.TAG_CVM, ""))

    def live() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for i in instances():
            if i["State"]["Name"] not in ("shutting-down", "terminated"):
                found.setdefault(cvm_of(i), []).append(i["InstanceId"])
        return found

    try:
        yield Cloud(
            name="aws",
            provider_toml=f"""\
name = "aws"
enabled = true
[config]
region = "us-east-2"
image_id = "{image}"
endpoint_url = "{url}"
vcpusSEV = [2]
""",
            creations=lambda: Counter(cvm_of(i) for i in instances()),
            live=live,
            env=keys,
        )
    finally:
        server.shutdown()
        server.server_close()
        moto.stop()


def _gcp() -> Iterator[Cloud]:
    fake = gcp_compute.FakeCompute(chaos=Chaos(**TROUBLE))  # type: ignore[arg-type]
    server, url = gcp_compute.serve(fake)

    def live() -> dict[str, list[str]]:
        with fake.lock:
            return {i["labels"][cloud.TAG_CVM]: [name] for name, i in fake.instances.items()}

    def creations() -> Counter[str]:
        with fake.lock:
            return Counter(
                {name.removeprefix(cloud.NAME_PREFIX): n for name, n in fake.created.items()}
            )

    try:
        yield Cloud(
            name="gcp",
            provider_toml=f"""\
name = "gcp"
enabled = true
[config]
project_id = "chaos"
region = "us-central1"
image = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts"
api_endpoint = "{url}"
anonymous_credentials = true
vcpusSEV = [2]
vcpusTDX = []
""",
            creations=creations,
            live=live,
        )
    finally:
        server.shutdown()
        server.server_close()


def _azure() -> Iterator[Cloud]:
    fake = azure_arm.FakeArm(operation_seconds=0.3, chaos=Chaos(**TROUBLE))  # type: ignore[arg-type]
    server, url = azure_arm.serve(fake)

    def live() -> dict[str, list[str]]:
        with fake.lock:
            return {vm["tags"][cloud.TAG_CVM]: [name] for name, vm in fake.vms.items()}

    def creations() -> Counter[str]:
        with fake.lock:
            return Counter(
                {name.removeprefix(cloud.NAME_PREFIX): n for name, n in fake.created.items()}
            )

    def leftovers() -> list[str]:
        with fake.lock:
            return [r for r, vm in fake.resources.items() if vm not in fake.vms]

    try:
        yield Cloud(
            name="azure",
            provider_toml=f"""\
name = "azure"
enabled = true
[config]
subscription_id = "sub-chaos"
resource_group = "prism"
location = "westeurope"
image = "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest"
subnet_id = "{SUBNET}"
base_url = "{url}"
anonymous_credentials = true
operation_wait_seconds = 2
vcpusSEV = [2]
vcpusTDX = []
""",
            creations=creations,
            live=live,
            leftovers=leftovers,
        )
    finally:
        server.shutdown()
        server.server_close()


CLOUDS = {"aws": _aws, "gcp": _gcp, "azure": _azure}


@pytest.fixture(params=sorted(CLOUDS))
def fake_cloud(request: pytest.FixtureRequest) -> Iterator[Cloud]:
    yield from CLOUDS[request.param]()


def test_each_cloud_converges_under_sigkill_without_duplicates_or_leaks(
    cluster: Cluster,  # noqa: F811 - the fixture imported above
    fake_cloud: Cloud,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    cluster.extra_env.update(fake_cloud.env or {})
    cluster.use_provider(fake_cloud.provider_toml, name=fake_cloud.name)
    cluster.run("migrate", "--database-url", cluster.database_url)
    token = cluster.run("token", "issue", "--domain", DOMAIN, "--data-dir", str(cluster.data_dir))
    cluster.start_api()
    for _ in range(WORKERS):
        cluster.start_worker()
    engine = create_engine(cluster.database_url)
    api = Api(cluster.base_url, token.strip(), provider=fake_cloud.name)
    try:
        chaos = make_chaos(cluster, engine, api, rng, count=CVM_COUNT)
        rows, converged_after = wait_converged(engine)
    finally:
        api.close()
        engine.dispose()

    creations = fake_cloud.creations()
    live = fake_cloud.live()
    states = Counter(row.state for row in rows.values())
    with capsys.disabled():
        print(
            f"\n{fake_cloud.name} chaos (seed {seed}): {CVM_COUNT} CVMs, "
            f"{len(chaos.deleted)} deleted, {cluster.kills} workers SIGKILLed; "
            f"states {dict(sorted(states.items()))}; {sum(creations.values())} machines made, "
            f"{sum(len(v) for v in live.values())} live; "
            f"{cluster.log_count('): retry ')} retries logged, "
            f"{cluster.log_count('lifecycle step failed')} unexpected step errors; "
            f"converged {converged_after:.1f} s after the chaos, "
            f"{time.monotonic() - started:.1f} s in all"
        )

    stuck = unconverged(rows)
    assert not stuck, f"{len(stuck)} CVMs did not converge: {stuck[:5]}"
    assert set(rows) == set(chaos.ids)
    twice = {cvm: n for cvm, n in creations.items() if n > 1}
    assert not twice, f"machines made more than once for one CVM: {twice}"
    assert set(creations) <= set(rows), "machines for CVMs the service never recorded"
    for cvm_id in chaos.deleted:
        assert rows[cvm_id].deleted, cvm_id
    leaked = {
        cvm: ids
        for cvm, ids in live.items()
        if cvm not in rows or rows[cvm].state != "provisioned" or rows[cvm].deleted
    }
    assert not leaked, f"{len(leaked)} CVMs' machines leaked: {leaked}"
    for row in rows.values():
        if row.state == "provisioned" and not row.deleted:
            assert live.get(row.id) == [row.cvm_id], (row, live.get(row.id))
    assert not fake_cloud.leftovers(), f"resources left behind: {fake_cloud.leftovers()}"
