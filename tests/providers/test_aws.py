"""The aws driver through boto3: against moto's EC2 server on loopback (it
remembers what it made), with the requests boto3 really sent checked, and
failures injected with botocore's Stubber."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
import yaml
from botocore.stub import ANY, Stubber
from moto.server import ThreadedMotoServer

from prism_backends.providers import cloud
from prism_backends.providers.aws import AwsProvider, make_aws
from prism_backends.providers.base import (
    MachineRequest,
    MachineState,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError
from prism_backends.vocabulary import Platform
from tests.providers.machine_requests import machine_request

MARK = "a1b2c3d4e5f6"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's backends are the process's, not the server's: without a reset a test
    # sees the machines an earlier test on the same worker made under the same mark.
    httpx.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    try:
        yield url
    finally:
        server.stop()


def config(endpoint: str, mark: str = MARK, **settings: Any) -> ProviderConfig:
    ec2 = boto3.client("ec2", region_name="us-east-2", endpoint_url=endpoint)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    return ProviderConfig(
        name="aws",
        enabled=True,
        driver="aws",
        settings={
            "region": "us-east-2",
            "image_id": image,
            "endpoint_url": endpoint,
            "vcpusSEV": [2, 4, 8],
            **settings,
        },
        source="aws.toml",
        deployment_mark=mark,
    )


def request_for(cvm_id: str, vcpus: int = 2) -> MachineRequest:
    return machine_request(cvm_id, vcpus=vcpus)


def sent(provider: AwsProvider, operation: str) -> list[dict[str, Any]]:
    """Record the parameters boto3 is given for ``operation``."""
    calls: list[dict[str, Any]] = []
    provider._ec2.meta.events.register(
        f"provide-client-params.ec2.{operation}", lambda params, **_: calls.append(dict(params))
    )
    return calls


def test_create_describe_delete_and_sweep_listing_round_trip(moto_url: str) -> None:
    provider = make_aws(config(moto_url))
    runs = sent(provider, "RunInstances")
    machine = provider.create(request_for("cvm-1"))
    assert machine.provider_machine_id.startswith("i-")
    assert machine.state in (MachineState.CREATING, MachineState.RUNNING)

    [call] = runs
    assert call["CpuOptions"] == {"AmdSevSnp": "enabled"}
    assert call["ClientToken"] == "cvm-1"
    assert call["InstanceType"] == "m6a.large"
    tags = {t["Key"]: t["Value"] for t in call["TagSpecifications"][0]["Tags"]}
    assert tags == {
        "prism-backends-cvm": "cvm-1",
        "prism-backends-domain": "dom-1",
        "prism-backends-mark": MARK,
        "Name": "prism-cvm-1",
    }
    assert call["UserData"].startswith("#cloud-config\n")

    # Retried: found again by its tag (and ClientToken), not made twice.
    again = provider.create(request_for("cvm-1"))
    assert again.provider_machine_id == machine.provider_machine_id
    assert len(runs) == 1

    described = provider.describe("cvm-1", machine.provider_machine_id)
    assert described is not None and described.provider_machine_id == machine.provider_machine_id

    theirs = make_aws(config(moto_url, mark="someone-else"))
    theirs.create(request_for("cvm-theirs"))
    assert [m.cvm_id for m in provider.owned_machines()] == ["cvm-1"]

    provider.delete("cvm-1", machine.provider_machine_id)
    assert provider.describe("cvm-1", machine.provider_machine_id) is None
    assert list(provider.owned_machines()) == []
    provider.delete("cvm-1", machine.provider_machine_id)  # already gone: done
    provider.delete("cvm-never", "")  # never made: done


def test_user_data_gives_the_agent_its_identity_and_starts_it(moto_url: str) -> None:
    request = request_for("cvm-2")
    document = yaml.safe_load(cloud.user_data(request))
    files = {entry["path"]: entry for entry in document["write_files"]}
    assert request.agent is not None
    key = files["/etc/cocos/certs/key.pem"]
    assert base64.b64decode(key["content"]) == request.agent.client_key_pem
    assert key["permissions"] == "0600"
    environment = base64.b64decode(files["/etc/cocos/environment"]["content"]).decode()
    assert "AGENT_CVM_GRPC_URL=prism.example.com:7018\n" in environment
    assert "AGENT_CVM_ID=cvm-2\n" in environment
    assert "/opt/prism-agent/agent.tar.gz" in files
    assert any("enable --now cocos-agent" in " ".join(step) for step in document["runcmd"])
    assert len(cloud.user_data(request).encode()) < cloud.MAX_USER_DATA_BYTES


def test_injected_failures_end_as_classified(
    moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make_aws(config(moto_url))
    request = request_for("cvm-3")
    cases = [
        ("InsufficientInstanceCapacity", RetryableProviderError),
        ("RequestLimitExceeded", RetryableProviderError),
        ("InvalidAMIID.NotFound", TerminalProviderError),
        ("UnauthorizedOperation", TerminalProviderError),
        ("InvalidParameterCombination", TerminalProviderError),
    ]
    for code, kind in cases:
        with Stubber(provider._ec2) as stub:
            stub.add_response("describe_instances", {"Reservations": []}, {"Filters": ANY})
            stub.add_client_error("run_instances", service_error_code=code, service_message="no")
            with pytest.raises(kind, match=code):
                provider.create(request)
    assert request.agent is not None
    key_line = request.agent.client_key_pem.decode().splitlines()[1]
    assert key_line not in caplog.text  # the agent's key is never logged


def test_tdx_and_unknown_sizes_are_refused_and_the_file_is_checked(moto_url: str) -> None:
    provider = make_aws(config(moto_url))
    assert provider.offerings == {Platform.SEV_SNP: {2, 4, 8}}
    tdx = request_for("cvm-4")
    with pytest.raises(TerminalProviderError, match="SEV-SNP only"):
        provider.create(MachineRequest(**{**_fields(tdx), "platform": Platform.TDX}))
    with pytest.raises(TerminalProviderError, match="no M6a size"):
        provider.create(request_for("cvm-5", vcpus=3))
    with pytest.raises(ProviderConfigError, match="image_id"):
        make_aws(ProviderConfig("aws", True, "aws", {"region": "us-east-2"}, source="aws.toml"))


def _fields(request: MachineRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in MachineRequest.__dataclass_fields__}
