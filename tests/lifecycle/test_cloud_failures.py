"""Cloud failures end as their classification says, through the lifecycle
worker and each real driver against its fake: capacity, quota and throttling
are retried with backoff (the cloud's code on record) until the machine is
made; auth and bad-input failures fail the CVM with the code."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy.orm import Session

from prism_backends.config import Settings
from prism_backends.cvms.models import CVM
from prism_backends.lifecycle import reconciler
from prism_backends.lifecycle.worker import LifecycleWorkers
from prism_backends.providers.aws import make_aws
from prism_backends.providers.base import AgentBootstrap, Provider
from prism_backends.providers.config import ProviderConfig, default_configs
from prism_backends.providers.registry import Catalog, CatalogEntry
from prism_backends.runtime import Runtime
from tests.factories import cvm_row, pending_cvm
from tests.fakes import azure_arm, ec2_front, gcp_compute
from tests.fakes.chaos import Injected
from tests.providers import test_aws as aws_tests
from tests.providers import test_azure as azure_tests
from tests.providers import test_gcp as gcp_tests
from tests.providers.machine_requests import machine_request

FAST = {"retry_base_seconds": 0.001, "retry_max_seconds": 0.002, "lease_seconds": 30.0}


@dataclass
class FakeCloud:
    name: str
    provider: Provider
    inject: Callable[[str, int, int], None]  # (code, HTTP status, times)


def _aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloud]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    front = ec2_front.Ec2Front(f"http://127.0.0.1:{port}")
    server, url = ec2_front.serve(front)
    config = aws_tests.config(f"http://127.0.0.1:{port}")
    config = ProviderConfig(
        **{**config.__dict__, "settings": {**config.settings, "endpoint_url": url}}
    )

    def inject(code: str, status: int, times: int) -> None:
        front.failures.extend([(status, code)] * times)

    try:
        yield FakeCloud("aws", make_aws(config), inject)
    finally:
        server.shutdown()
        server.server_close()
        moto.stop()


def _gcp(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloud]:
    fake = gcp_compute.FakeCompute()
    server, url = gcp_compute.serve(fake)

    def inject(code: str, status: int, times: int) -> None:
        fake.failures.extend([Injected(code, http_status=status)] * times)

    try:
        yield FakeCloud("gcp", gcp_tests.provider_for(url), inject)
    finally:
        server.shutdown()
        server.server_close()


def _azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloud]:
    fake = azure_arm.FakeArm(operation_seconds=0)
    server, url = azure_arm.serve(fake)

    def inject(code: str, status: int, times: int) -> None:
        fake.failures.extend([Injected(code, http_status=status)] * times)

    try:
        yield FakeCloud("azure", azure_tests.provider_for(url), inject)
    finally:
        server.shutdown()
        server.server_close()


CLOUDS = {"aws": _aws, "gcp": _gcp, "azure": _azure}
# cloud -> (retryable failures, terminal failures), as (code, HTTP status; 0: in the operation)
CASES: dict[str, tuple[list[tuple[str, int]], list[tuple[str, int]]]] = {
    "aws": (
        [("InsufficientInstanceCapacity", 500), ("RequestLimitExceeded", 503)],
        [("UnauthorizedOperation", 403), ("InvalidAMIID.NotFound", 400)],
    ),
    "gcp": (
        [("ZONE_RESOURCE_POOL_EXHAUSTED", 0), ("QUOTA_EXCEEDED", 0), ("rateLimitExceeded", 429)],
        [("forbidden", 403), ("invalid", 400)],
    ),
    "azure": (
        [("SkuNotAvailable", 409), ("OperationNotAllowed", 409), ("AllocationFailed", 0)],
        [("AuthorizationFailed", 403), ("InvalidParameter", 400)],
    ),
}


@pytest.fixture(params=sorted(CLOUDS))
def fake_cloud(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeCloud]:
    yield from CLOUDS[request.param](monkeypatch)


@pytest.fixture
def workers(
    make_settings: Callable[..., Settings], fake_cloud: FakeCloud
) -> Iterator[tuple[Runtime, LifecycleWorkers]]:
    rt = Runtime(make_settings(**FAST))
    config = default_configs()[fake_cloud.name]
    rt.catalog = Catalog({fake_cloud.name: CatalogEntry(config, fake_cloud.provider)}, {})

    def bootstrap(_session: Session, domain_id: str, cvm_id: str) -> AgentBootstrap | None:
        return machine_request(cvm_id, domain_id=domain_id).agent

    yield rt, LifecycleWorkers(rt.settings, rt.sessions, rt.catalog, bootstrap)
    rt.close()


def _step_until(
    rt: Runtime, workers: LifecycleWorkers, cvm_id: str, done: Callable[[CVM], bool]
) -> CVM:
    for _ in range(200):
        workers.run_once()
        row = cvm_row(rt.sessions, cvm_id)
        if done(row):
            return row
    raise AssertionError(f"never got there: {cvm_row(rt.sessions, cvm_id).__dict__}")


def test_retryable_failures_back_off_with_the_code_then_the_machine_is_made(
    fake_cloud: FakeCloud,
    workers: tuple[Runtime, LifecycleWorkers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "CREATION_POLL_SECONDS", 0.0)
    rt, lifecycle = workers
    for code, status in CASES[fake_cloud.name][0]:
        # aws and azure SDKs retry 5xx and throttling themselves (3 times): outlast them.
        fake_cloud.inject(code, status, 4 if status >= 429 else 1)
        cvm_id = pending_cvm(rt.sessions, fake_cloud.name)
        lifecycle.run_once()
        row = cvm_row(rt.sessions, cvm_id)
        assert row.state == "provisioning" and row.attempts >= 1, (code, row.error)
        assert row.error.startswith("retrying: ") and code in row.error, (code, row.error)
        row = _step_until(rt, lifecycle, cvm_id, lambda r: r.state != "provisioning")
        assert (row.state, row.error, row.attempts) == ("provisioned", "", 0), code


def test_terminal_failures_fail_the_cvm_naming_the_code(
    fake_cloud: FakeCloud, workers: tuple[Runtime, LifecycleWorkers]
) -> None:
    rt, lifecycle = workers
    for code, status in CASES[fake_cloud.name][1]:
        fake_cloud.inject(code, status, 1)
        cvm_id = pending_cvm(rt.sessions, fake_cloud.name)
        row = _step_until(rt, lifecycle, cvm_id, lambda r: r.next_attempt_at is None)
        assert (row.state, row.status) == ("failed", "failed"), (code, row.error)
        assert code in row.error, (code, row.error)
        assert list(fake_cloud.provider.owned_machines()) == [] or all(
            m.cvm_id != cvm_id for m in fake_cloud.provider.owned_machines()
        )
