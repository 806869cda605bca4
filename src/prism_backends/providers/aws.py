"""The ``aws`` provider: SEV-SNP instances on EC2 through boto3.

``[config]`` keys: ``region``, ``image_id`` (a UEFI AMI), ``subnet_id``,
``security_group_ids``, ``endpoint_url`` (a local fake or a VPC endpoint;
plain ``http://`` accepted), ``agent`` (``reference`` or ``cocos``) with
``cocos_agent_url``. Credentials come from boto3's default chain
(environment, shared files, instance metadata), never from the file.

Only the SNP-capable M6a family, with ``CpuOptions={"AmdSevSnp": "enabled"}``;
TDX is not offered on AWS. ``ClientToken`` is our CVM id, so a retried
``run_instances`` returns the instance it already made; the instance carries
the CVM id, the domain and this deployment's mark as tags, which is how it is
found again and how the leak sweep finds ours. AWS signs SNP reports with a
VLEK (chip id zero), which the attestation core accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from prism_backends.providers import cloud
from prism_backends.providers.base import (
    Machine,
    MachineRequest,
    MachineState,
    OwnedMachine,
    ProviderError,
    RemoteDriver,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError, vcpu_list
from prism_backends.vocabulary import Platform

# vCPUs -> the M6a size with that many (2 vCPUs per core).
SIZES = {
    2: "m6a.large",
    4: "m6a.xlarge",
    8: "m6a.2xlarge",
    16: "m6a.4xlarge",
    32: "m6a.8xlarge",
    48: "m6a.12xlarge",
    64: "m6a.16xlarge",
    96: "m6a.24xlarge",
    128: "m6a.32xlarge",
    192: "m6a.48xlarge",
}
STATES = {  # EC2 instance state -> ours (Libcloud's NODE_STATE_MAP)
    "pending": MachineState.CREATING,
    "running": MachineState.RUNNING,
    "stopping": MachineState.STOPPED,
    "stopped": MachineState.STOPPED,
    "shutting-down": MachineState.FAILED,
    "terminated": MachineState.FAILED,
}
RETRYABLE_CODES = {
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "IdempotentParameterMismatch",  # a previous attempt's instance is still settling
}
TERMINAL_PREFIXES = ("InvalidAMIID", "Unsupported", "InvalidParameter", "InvalidSubnet")
TERMINAL_CODES = {"UnauthorizedOperation", "AuthFailure", "InvalidClientTokenId", "OptInRequired"}
GONE = ("shutting-down", "terminated")


def classified(exc: Exception, what: str) -> ProviderError:
    """An EC2 failure as retryable or terminal, naming AWS's error code."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        message = f"{what}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code in RETRYABLE_CODES:
            return RetryableProviderError(message)
        if code in TERMINAL_CODES or code.startswith(TERMINAL_PREFIXES):
            return TerminalProviderError(message)
        return RetryableProviderError(message)  # unknown: try again, with the code on record
    if isinstance(exc, NoCredentialsError):
        return TerminalProviderError(f"{what}: no AWS credentials in boto3's default chain")
    if isinstance(exc, BotoConnectionError):
        return RetryableProviderError(f"{what}: {type(exc).__name__}: cannot reach EC2")
    return RetryableProviderError(f"{what}: {type(exc).__name__}: {exc}")


class AwsProvider(RemoteDriver):
    provider_name = "aws"

    def __init__(
        self,
        ec2: Any,
        *,
        image_id: str,
        subnet_id: str = "",
        security_group_ids: tuple[str, ...] = (),
        offerings: Mapping[Platform, frozenset[int]],
        deployment_mark: str = "",
        agent: cloud.AgentChoice = cloud.AgentChoice(),
    ) -> None:
        self._ec2 = ec2
        self._image_id = image_id
        self._subnet_id = subnet_id
        self._security_groups = security_group_ids
        super().__init__(offerings)
        self._mark = deployment_mark
        self._agent = agent

    def create(self, request: MachineRequest) -> Machine:
        if request.platform is not Platform.SEV_SNP:
            raise TerminalProviderError("AWS offers SEV-SNP only, not TDX")
        size = SIZES.get(request.vcpus)
        if size is None:
            raise TerminalProviderError(f"no M6a size has {request.vcpus} vCPUs")
        found = self._instance_of(request.cvm_id)
        if found is not None:
            return _machine(found)
        parameters: dict[str, Any] = {
            "ImageId": self._image_id,
            "InstanceType": size,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": request.cvm_id,
            "CpuOptions": {"AmdSevSnp": "enabled"},
            "UserData": cloud.user_data(request, self._agent),
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": self._tags(request)}
                for kind in ("instance", "volume")
            ],
            "MetadataOptions": {"HttpTokens": "required"},
        }
        if self._subnet_id:
            parameters["SubnetId"] = self._subnet_id
        if self._security_groups:
            parameters["SecurityGroupIds"] = list(self._security_groups)
        try:
            reply = self._ec2.run_instances(**parameters)
        except (ClientError, BotoCoreError) as exc:
            raise classified(exc, "run_instances") from exc
        return _machine(reply["Instances"][0])

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        instance_id = provider_machine_id
        if not instance_id:
            found = self._instance_of(cvm_id)
            if found is None:
                return  # never made
            instance_id = found["InstanceId"]
        try:
            self._ec2.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _code(exc).startswith("InvalidInstanceID"):
                return  # already gone
            raise classified(exc, "terminate_instances") from exc
        except BotoCoreError as exc:
            raise classified(exc, "terminate_instances") from exc

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        if not provider_machine_id:
            found = self._instance_of(cvm_id)
            return _machine(found) if found is not None else None
        try:
            reply = self._ec2.describe_instances(InstanceIds=[provider_machine_id])
        except ClientError as exc:
            if _code(exc).startswith("InvalidInstanceID"):
                return None
            raise classified(exc, "describe_instances") from exc
        except BotoCoreError as exc:
            raise classified(exc, "describe_instances") from exc
        instances = [i for r in reply["Reservations"] for i in r["Instances"]]
        live = [i for i in instances if i["State"]["Name"] not in GONE]
        return _machine(live[0]) if live else None

    def owned_machines(self) -> Iterable[OwnedMachine]:
        if not self._mark:
            return []
        owned = []
        for instance in self._instances(
            [{"Name": f"tag:{cloud.TAG_MARK}", "Values": [self._mark]}]
        ):
            cvm_id = _tag(instance, cloud.TAG_CVM)
            if cvm_id:
                owned.append(
                    OwnedMachine(cvm_id=cvm_id, provider_machine_id=instance["InstanceId"])
                )
        return owned

    def _tags(self, request: MachineRequest) -> list[dict[str, str]]:
        labels = {**cloud.tags(request, self._mark), "Name": cloud.machine_name(request.cvm_id)}
        return [{"Key": key, "Value": value} for key, value in labels.items()]

    def _instance_of(self, cvm_id: str) -> dict[str, Any] | None:
        matches = self._instances([{"Name": f"tag:{cloud.TAG_CVM}", "Values": [cvm_id]}])
        return matches[0] if matches else None

    def _instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        states = ["pending", "running", "stopping", "stopped"]
        try:
            pages = self._ec2.get_paginator("describe_instances").paginate(
                Filters=[*filters, {"Name": "instance-state-name", "Values": states}]
            )
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        except (ClientError, BotoCoreError) as exc:
            raise classified(exc, "describe_instances") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _tag(instance: Mapping[str, Any], key: str) -> str:
    for tag in instance.get("Tags", []):
        if tag.get("Key") == key:
            return str(tag.get("Value", ""))
    return ""


def _machine(instance: Mapping[str, Any]) -> Machine:
    state = STATES.get(instance["State"]["Name"], MachineState.CREATING)
    address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or ""
    return Machine(
        provider_machine_id=instance["InstanceId"],
        state=state,
        agent_url=f"{address}:7002" if address else "",
        detail=instance.get("StateReason", {}).get("Message", "")
        if state is MachineState.FAILED
        else "",
    )


def make_aws(config: ProviderConfig) -> AwsProvider:
    settings, source = config.settings, config.source
    region = cloud.required_setting(settings, "region", source, hint=" (e.g. us-east-2)")
    image_id = cloud.required_setting(settings, "image_id", source, hint=" (a UEFI AMI)")
    groups = settings.get("security_group_ids", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ProviderConfigError(f"{source}: [config] security_group_ids must list strings")
    endpoint = settings.get("endpoint_url") or None
    client = boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint,
        config=BotoConfig(
            retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60
        ),
    )
    return AwsProvider(
        client,
        image_id=image_id,
        subnet_id=str(settings.get("subnet_id", "")),
        security_group_ids=tuple(groups),
        offerings={Platform.SEV_SNP: vcpu_list(settings, "vcpusSEV", source) & frozenset(SIZES)},
        deployment_mark=config.deployment_mark,
        agent=cloud.agent_choice(settings, source),
    )
