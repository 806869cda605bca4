"""The ``azure`` provider: Confidential VMs through azure-mgmt-compute.

``[config]`` keys: ``subscription_id``, ``resource_group``, ``location``,
``image`` (a ``publisher:offer:sku:version`` URN or an image resource id),
``subnet_id`` (the subnet's resource id), ``base_url`` (a local fake or a
sovereign cloud; plain ``http://`` accepted), ``public_ip`` (default true),
``ssh_public_key`` (optional: the operator's key for the ``admin_username``,
default ``prism``), ``operation_wait_seconds`` (how long one step waits on a
long-running operation, default 60), ``anonymous_credentials = true`` (fakes
only), ``agent`` / ``cocos_agent_url``. Credentials come from azure-identity's
``DefaultAzureCredential`` (environment, workload identity, managed identity,
the Azure CLI), never from the file.

SEV-SNP on ``Standard_DCNas_v5``, TDX on ``Standard_DCNes_v5``, both with
``security_type = ConfidentialVM``, secure boot and vTPM, and the OS disk's
``security_encryption_type = VMGuestStateOnly``. The NIC and public IP are
created inline with the VM, and the NIC, IP and disk carry ``delete_option =
Delete``, so deleting the VM removes everything it brought.

A create is a long-running operation of minutes: one step waits at most
``operation_wait_seconds`` on it (the worker renews its lease meanwhile) and
otherwise reports the machine as creating; later steps read the VM's
provisioning state. A VM whose creation failed for want of capacity is deleted
and the create retried; one that failed for good is reported failed, and the
cleanup that follows deletes it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as compute
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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

SIZES = {
    Platform.SEV_SNP: {n: f"Standard_DC{n}as_v5" for n in (2, 4, 8, 16, 32, 48, 64, 96)},
    Platform.TDX: {n: f"Standard_DC{n}es_v5" for n in (2, 4, 8, 16, 32, 48, 64, 96, 128)},
}
RETRYABLE_CODES = {
    "SkuNotAvailable",
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OperationNotAllowed",  # the quota refusal
    "TooManyRequests",
    "RetryableError",
    "InternalServerError",
    "InternalExecutionError",
    "ServiceUnavailable",
    "Conflict",  # another operation on the VM is still running
}
TERMINAL_CODES = {
    "InvalidParameter",
    "AuthorizationFailed",
    "InvalidAuthenticationToken",
    "LinkedAuthorizationFailed",
    "ImageNotFound",
    "PlatformImageNotFound",
    "InvalidTemplateDeployment",
    "ResourceGroupNotFound",
    "SubscriptionNotFound",
    "InvalidResourceReference",
    "BadRequest",
}
POWER_STATES = {  # instance view "PowerState/<x>" -> ours
    "running": MachineState.RUNNING,
    "starting": MachineState.CREATING,
    "stopping": MachineState.STOPPED,
    "stopped": MachineState.STOPPED,
    "deallocating": MachineState.STOPPED,
    "deallocated": MachineState.STOPPED,
}
DEFAULT_OPERATION_WAIT = 60.0
# What a call through the SDK can raise: an ARM error answer, or no answer at all.
AZURE_ERRORS = (HttpResponseError, ServiceRequestError, ServiceResponseError)
NETWORK_API_VERSION = "2022-11-01"  # lets the compute API create the NIC and IP inline


def classified(exc: Exception, what: str) -> ProviderError:
    """An ARM failure as retryable or terminal, naming Azure's error code."""
    if isinstance(exc, ClientAuthenticationError):
        return TerminalProviderError(f"{what}: no usable Azure credentials: {exc.message}")
    if isinstance(exc, HttpResponseError):
        code = _code(exc)
        message = f"{what}: {code}: {_message(exc)}"
        if code in RETRYABLE_CODES or exc.status_code in (429, 500, 502, 503, 504):
            return RetryableProviderError(message)
        if code in TERMINAL_CODES or code.endswith("NotFound") or exc.status_code in (400, 403):
            return TerminalProviderError(message)
        return RetryableProviderError(message)  # unknown: try again, with the code on record
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return RetryableProviderError(f"{what}: {type(exc).__name__}: cannot reach Azure")
    return RetryableProviderError(f"{what}: {type(exc).__name__}: {exc}")


def _code(exc: HttpResponseError) -> str:
    error = exc.error
    code = getattr(error, "code", None) or exc.reason or f"HTTP {exc.status_code}"
    return str(code)


def _message(exc: HttpResponseError) -> str:
    return str(getattr(exc.error, "message", None) or exc.message).splitlines()[0]


def image_reference(image: str) -> compute.ImageReference:
    """A URN (``publisher:offer:sku:version``) or a resource id, as the CLI takes them."""
    if image.startswith("/"):
        return compute.ImageReference(id=image)
    parts = image.split(":")
    if len(parts) != 4 or not all(parts):
        raise ValueError("image must be publisher:offer:sku:version or a resource id")
    publisher, offer, sku, version = parts
    return compute.ImageReference(publisher=publisher, offer=offer, sku=sku, version=version)


class StaticToken:
    """A credential for fakes and emulators: a fixed bearer token, never a secret."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("anonymous", int(time.time()) + 3600)


class AzureProvider(RemoteDriver):
    provider_name = "azure"

    def __init__(
        self,
        client: ComputeManagementClient,
        *,
        resource_group: str,
        location: str,
        image: compute.ImageReference,
        subnet_id: str,
        offerings: Mapping[Platform, frozenset[int]],
        deployment_mark: str = "",
        agent: cloud.AgentChoice = cloud.AgentChoice(),
        public_ip: bool = True,
        admin_username: str = "prism",
        ssh_public_key: str = "",
        operation_wait_seconds: float = DEFAULT_OPERATION_WAIT,
        call_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._vms = client.virtual_machines
        self._group = resource_group
        self._location = location
        self._image = image
        self._subnet_id = subnet_id
        super().__init__(offerings)
        self._mark = deployment_mark
        self._agent = agent
        self._public_ip = public_ip
        self._admin = admin_username
        self._ssh_key = ssh_public_key
        self._wait = operation_wait_seconds
        self._options = dict(call_options or {})

    def create(self, request: MachineRequest) -> Machine:
        size = SIZES[request.platform].get(request.vcpus)
        if size is None:
            raise TerminalProviderError(
                f"no Azure confidential size has {request.vcpus} vCPUs on {request.platform}"
            )
        name = cloud.machine_name(request.cvm_id)
        existing = self._get(name)
        if existing is not None:
            return self._settle(name, existing)
        try:
            poller = self._vms.begin_create_or_update(
                self._group, name, self._virtual_machine(request, name, size), **self._options
            )
            poller.wait(self._wait)
            if not poller.done():
                # Its polling thread ends with the operation; later steps read the VM.
                return Machine(provider_machine_id=name, state=MachineState.CREATING)
            poller.result()
        except AZURE_ERRORS as exc:
            raise classified(exc, "virtual_machines.create_or_update") from exc
        found = self._get(name)
        return self._settle(name, found) if found else Machine(name, MachineState.CREATING)

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        name = provider_machine_id or cloud.machine_name(cvm_id)
        found = self._get(name)
        if found is None:
            return  # already gone
        if _provisioning(found) != "deleting" and self._begin_delete(name):
            return
        raise RetryableProviderError(f"virtual_machines.delete: {name} is still being deleted")

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        found = self._get(provider_machine_id or cloud.machine_name(cvm_id))
        if found is None or _provisioning(found) == "deleting":
            return None
        return _machine(found)

    def owned_machines(self) -> Iterable[OwnedMachine]:
        if not self._mark:
            return []
        try:
            listed = list(self._vms.list(self._group, **self._options))
        except AZURE_ERRORS as exc:
            raise classified(exc, "virtual_machines.list") from exc
        owned = []
        for vm in listed:
            labels = vm.tags or {}
            if labels.get(cloud.TAG_MARK) == self._mark and _provisioning(vm) != "deleting":
                cvm_id = labels.get(cloud.TAG_CVM)
                if cvm_id:
                    owned.append(OwnedMachine(cvm_id=cvm_id, provider_machine_id=vm.name or ""))
        return owned

    def _settle(self, name: str, vm: compute.VirtualMachine) -> Machine:
        """An existing VM, as the create sees it: capacity failures start over."""
        machine = _machine(vm)
        if machine.state is MachineState.FAILED and _failure_code(vm) in RETRYABLE_CODES:
            self._begin_delete(name)
            raise RetryableProviderError(f"virtual_machines.create_or_update: {machine.detail}")
        return machine

    def _begin_delete(self, name: str) -> bool:
        """Start deleting; True when the VM (with its NIC, IP and disk) is gone."""
        try:
            poller = self._vms.begin_delete(self._group, name, **self._options)
            poller.wait(self._wait)
            if not poller.done():
                return False
            poller.result()
        except ResourceNotFoundError:
            return True
        except AZURE_ERRORS as exc:
            raise classified(exc, "virtual_machines.delete") from exc
        return True

    def _get(self, name: str) -> compute.VirtualMachine | None:
        try:
            vm: compute.VirtualMachine = self._vms.get(
                self._group, name, expand="instanceView", **self._options
            )
        except ResourceNotFoundError:
            return None
        except AZURE_ERRORS as exc:
            raise classified(exc, "virtual_machines.get") from exc
        return vm

    def _virtual_machine(
        self, request: MachineRequest, name: str, size: str
    ) -> compute.VirtualMachine:
        custom_data = base64.b64encode(cloud.user_data(request, self._agent).encode()).decode()
        return compute.VirtualMachine(
            location=self._location,
            tags=cloud.tags(request, self._mark),
            properties=compute.VirtualMachineProperties(
                hardware_profile=compute.HardwareProfile(vm_size=size),
                security_profile=compute.SecurityProfile(
                    security_type="ConfidentialVM",
                    uefi_settings=compute.UefiSettings(
                        secure_boot_enabled=True, v_tpm_enabled=True
                    ),
                ),
                storage_profile=compute.StorageProfile(
                    image_reference=self._image,
                    os_disk=compute.OSDisk(
                        create_option="FromImage",
                        delete_option="Delete",
                        managed_disk=compute.ManagedDiskParameters(
                            storage_account_type="Premium_LRS",
                            security_profile=compute.VMDiskSecurityProfile(
                                security_encryption_type="VMGuestStateOnly"
                            ),
                        ),
                    ),
                ),
                os_profile=compute.OSProfile(
                    computer_name=name,
                    admin_username=self._admin,
                    custom_data=custom_data,
                    linux_configuration=compute.LinuxConfiguration(
                        disable_password_authentication=True,
                        ssh=compute.SshConfiguration(
                            public_keys=[
                                compute.SshPublicKey(
                                    path=f"/home/{self._admin}/.ssh/authorized_keys",
                                    key_data=self._ssh_key or _unheld_ssh_key(),
                                )
                            ]
                        ),
                    ),
                ),
                network_profile=self._network(name),
            ),
        )

    def _network(self, name: str) -> compute.NetworkProfile:
        ip_properties = compute.VirtualMachineNetworkInterfaceIPConfigurationProperties(
            subnet=compute.SubResource(id=self._subnet_id), primary=True
        )
        if self._public_ip:
            ip_properties.public_ip_address_configuration = (
                compute.VirtualMachinePublicIPAddressConfiguration(
                    name=f"{name}-ip",
                    sku=compute.PublicIPAddressSku(name="Standard"),
                    properties=compute.VirtualMachinePublicIPAddressConfigurationProperties(
                        delete_option="Delete", public_ip_allocation_method="Static"
                    ),
                )
            )
        return compute.NetworkProfile(
            network_api_version=NETWORK_API_VERSION,
            network_interface_configurations=[
                compute.VirtualMachineNetworkInterfaceConfiguration(
                    name=f"{name}-nic",
                    properties=compute.VirtualMachineNetworkInterfaceConfigurationProperties(
                        primary=True,
                        delete_option="Delete",
                        ip_configurations=[
                            compute.VirtualMachineNetworkInterfaceIPConfiguration(
                                name="ipconfig", properties=ip_properties
                            )
                        ],
                    ),
                )
            ],
        )


def _unheld_ssh_key() -> str:
    """Azure wants a login for Linux VMs; without the operator's key, one nobody
    holds (the private half is never kept), so no one can log in."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _provisioning(vm: compute.VirtualMachine) -> str:
    state = vm.properties.provisioning_state if vm.properties else None
    return str(state or "").lower()


def _statuses(vm: compute.VirtualMachine) -> list[compute.InstanceViewStatus]:
    view = vm.properties.instance_view if vm.properties else None
    return list(view.statuses or []) if view else []


def _failure_code(vm: compute.VirtualMachine) -> str:
    """The code of a failed provisioning: ``ProvisioningState/failed/<Code>``."""
    for status in _statuses(vm):
        code = status.code or ""
        if code.lower().startswith("provisioningstate/failed"):
            return code.split("/", 2)[2] if code.count("/") >= 2 else "ProvisioningFailed"
    return "ProvisioningFailed"


def _machine(vm: compute.VirtualMachine) -> Machine:
    name = vm.name or ""
    provisioning = _provisioning(vm)
    if provisioning == "failed":
        failed = [s for s in _statuses(vm) if (s.code or "").lower().startswith("provisioning")]
        message = failed[0].message or "" if failed else ""
        detail = f"{_failure_code(vm)}: {message}".rstrip(": ")
        return Machine(provider_machine_id=name, state=MachineState.FAILED, detail=detail)
    if provisioning != "succeeded":
        return Machine(provider_machine_id=name, state=MachineState.CREATING)
    power = [
        (s.code or "").split("/", 1)[1]
        for s in _statuses(vm)
        if (s.code or "").startswith("PowerState/")
    ]
    state = POWER_STATES.get(power[0], MachineState.CREATING) if power else MachineState.CREATING
    # The agent dials in; its address lives on the NIC, which only the network API reads.
    return Machine(provider_machine_id=name, state=state)


def make_azure(config: ProviderConfig) -> AzureProvider:
    settings, source = config.settings, config.source
    subscription = cloud.required_setting(settings, "subscription_id", source)
    group = cloud.required_setting(settings, "resource_group", source)
    location = cloud.required_setting(settings, "location", source, hint=" (e.g. westeurope)")
    subnet = cloud.required_setting(
        settings, "subnet_id", source, hint=" (the subnet's resource id)"
    )
    try:
        image = image_reference(cloud.required_setting(settings, "image", source))
    except ValueError as exc:
        raise ProviderConfigError(f"{source}: [config] {exc}") from exc
    base_url = str(settings.get("base_url") or "https://management.azure.com")
    credential: Any
    if settings.get("anonymous_credentials") is True:
        credential = StaticToken()
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    # The SDK refuses bearer tokens over plain http; a fake's http endpoint is allowed.
    options = {"enforce_https": False} if base_url.startswith("http://") else {}
    client = ComputeManagementClient(
        credential, subscription, base_url=base_url, polling_interval=5, retry_total=3
    )
    return AzureProvider(
        client,
        resource_group=group,
        location=location,
        image=image,
        subnet_id=subnet,
        offerings={
            platform: vcpu_list(settings, key, source) & frozenset(SIZES[platform])
            for platform, key in ((Platform.SEV_SNP, "vcpusSEV"), (Platform.TDX, "vcpusTDX"))
        },
        deployment_mark=config.deployment_mark,
        agent=cloud.agent_choice(settings, source),
        public_ip=settings.get("public_ip", True) is not False,
        admin_username=str(settings.get("admin_username", "prism")),
        ssh_public_key=str(settings.get("ssh_public_key", "")),
        operation_wait_seconds=cloud.operation_wait_seconds(
            settings, source, DEFAULT_OPERATION_WAIT
        ),
        call_options=options,
    )
