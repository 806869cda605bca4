"""No credential or key reaches a log line: each cloud driver creates,
describes, lists and deletes a machine through its SDK and fake with the
service's logging at debug, and the captured logs are searched for the
agent's private key (as PEM lines, and base64-encoded as the user data
carries it), the user data itself, and the cloud's secret."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator

import pytest

from prism_backends.cli.options import SDK_LOGGERS, setup_logging
from prism_backends.providers import cloud
from prism_backends.providers.aws import make_aws
from prism_backends.providers.base import MachineRequest, Provider, RetryableProviderError
from tests.fakes import azure_arm, gcp_compute
from tests.providers import test_aws as aws_tests
from tests.providers import test_azure as azure_tests
from tests.providers import test_gcp as gcp_tests
from tests.providers.machine_requests import machine_request
from tests.providers.test_aws import moto_url  # noqa: F401 - a fixture

AWS_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def secrets_of(request: MachineRequest, extra: tuple[str, ...] = ()) -> list[str]:
    assert request.agent is not None
    key = request.agent.client_key_pem
    document = cloud.user_data(request)
    pem_lines = [line for line in key.decode().splitlines() if not line.startswith("-----")]
    return [
        *pem_lines,
        base64.b64encode(key).decode()[:60],
        base64.b64encode(document.encode()).decode()[:60],
        document.split("content: ", 2)[2][:60],  # the key file's base64, as written
        *extra,
    ]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    levels = {name: logging.getLogger(name).level for name in SDK_LOGGERS}
    setup_logging("debug")
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def exercise(provider: Provider, request: MachineRequest) -> None:
    machine = provider.create(request)
    provider.describe(request.cvm_id, machine.provider_machine_id)
    list(provider.owned_machines())
    # A delete still running is the worker's to retry; not the point here.
    with contextlib.suppress(RetryableProviderError):
        provider.delete(request.cvm_id, machine.provider_machine_id)


def assert_absent(text: str, secrets: list[str]) -> None:
    found = [secret[:12] + "..." for secret in secrets if secret in text]
    assert not found, f"secrets in the logs: {found}"


def test_aws_driver(
    moto_url: str,  # noqa: F811
    debug_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    request = machine_request("cvm-logged")
    exercise(make_aws(aws_tests.config(moto_url)), request)
    assert_absent(debug_logs.text, secrets_of(request, (AWS_SECRET,)))


def test_gcp_driver(debug_logs: pytest.LogCaptureFixture) -> None:
    server, url = gcp_compute.serve(gcp_compute.FakeCompute())
    try:
        request = machine_request("cvm-logged")
        exercise(gcp_tests.provider_for(url), request)
    finally:
        server.shutdown()
        server.server_close()
    assert_absent(debug_logs.text, secrets_of(request))


def test_azure_driver(debug_logs: pytest.LogCaptureFixture) -> None:
    server, url = azure_arm.serve(azure_arm.FakeArm(operation_seconds=0))
    try:
        request = machine_request("cvm-logged")
        exercise(azure_tests.provider_for(url), request)
    finally:
        server.shutdown()
        server.server_close()
    assert_absent(debug_logs.text, secrets_of(request))


def test_the_check_finds_a_key_where_an_sdk_logs_bodies(
    moto_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The control: botocore at DEBUG logs the user data, key and all, which is
    why the service holds the SDKs at WARNING."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    try:
        request = machine_request("cvm-control")
        make_aws(aws_tests.config(moto_url)).create(request)
    finally:
        logging.getLogger("botocore").setLevel(logging.NOTSET)
    with pytest.raises(AssertionError, match="secrets in the logs"):
        assert_absent(caplog.text, secrets_of(request))
