"""The ``gcp`` provider: Confidential VMs on Compute Engine through
google-cloud-compute.

``[config]`` keys: ``project_id``, ``region``, ``zone`` (default
``<region>-a``), ``image`` (a source image URL), ``network`` (default
``global/networks/default``), ``credentials_file`` (a service-account JSON;
default: the SDK's default chain), ``api_endpoint`` (a local fake or a
private endpoint; plain ``http://`` accepted) and ``anonymous_credentials =
true`` (fakes and emulators only), ``operation_wait_seconds`` (how long one
step waits on a zone operation, default 60; a create still running then is
looked at again by later steps), ``agent`` / ``cocos_agent_url``.

SEV-SNP on ``n2d-standard-N`` with ``min_cpu_platform = "AMD Milan"``, TDX on
``c3-standard-N``; ``on_host_maintenance = TERMINATE`` (confidential VMs cannot
live-migrate), shielded VM with vTPM. The instance is named after the CVM and
inserted with a ``request_id`` that is a UUID derived from the CVM id, so a
retry finds the operation it already started. Stockouts and quota surface
only in the zone operation's error: they are read there and classified.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from google.api_core import exceptions as google_errors
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1
from google.oauth2 import service_account

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
from prism_backends.providers.config import ProviderConfig, vcpu_list
from prism_backends.vocabulary import Platform

REQUEST_NAMESPACE = uuid.UUID("3b0b3c6e-7a0e-4d1e-9a55-8b6d1c1c0a11")
DEFAULT_OPERATION_WAIT = 60.0
FAMILIES = {Platform.SEV_SNP: "n2d-standard", Platform.TDX: "c3-standard"}
CONFIDENTIAL_TYPES = {Platform.SEV_SNP: "SEV_SNP", Platform.TDX: "TDX"}
STATES = {  # Compute Engine instance status -> ours
    "PROVISIONING": MachineState.CREATING,
    "STAGING": MachineState.CREATING,
    "RUNNING": MachineState.RUNNING,
    "STOPPING": MachineState.STOPPED,
    "STOPPED": MachineState.STOPPED,
    "SUSPENDING": MachineState.STOPPED,
    "SUSPENDED": MachineState.STOPPED,
    "TERMINATED": MachineState.STOPPED,
    "REPAIRING": MachineState.CREATING,
}
RETRYABLE_CODES = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "RESOURCE_POOL_EXHAUSTED",
    "QUOTA_EXCEEDED",
    "QUOTA_LIMIT",
    "RATE_LIMIT_EXCEEDED",
    "rateLimitExceeded",
    "backendError",
    "SERVICE_UNAVAILABLE",
)
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]")


def label_value(text: str) -> str:
    """GCP label values: lower case letters, digits, ``_`` and ``-``, at most 63."""
    return _LABEL_UNSAFE.sub("_", text.lower())[:63]


def request_id_for(cvm_id: str, attempt: int = 0) -> str:
    """GCP wants a UUID as request id: this one derives from the CVM and the
    attempt. A repeated id replays the first operation, failed or not, so a
    retry after a failure needs a new one; a retry after a crash (attempt not
    counted) reuses it. Duplicates cannot arise either way: instance names are
    unique in a zone."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, f"{cvm_id}:{attempt}" if attempt else cvm_id))


def _classified_code(code: str, message: str) -> ProviderError:
    if code.startswith(RETRYABLE_CODES) or code in RETRYABLE_CODES:
        return RetryableProviderError(message)
    return TerminalProviderError(message)


def classified(exc: Exception, what: str) -> ProviderError:
    """A Compute Engine failure as retryable or terminal, naming its code."""
    if isinstance(exc, google_errors.GoogleAPICallError):
        code = _operation_error_code(exc) or _reason(exc) or type(exc).__name__
        message = f"{what}: {code}: {exc.message}"
        if isinstance(exc, google_errors.TooManyRequests | google_errors.ServiceUnavailable):
            return RetryableProviderError(message)
        if isinstance(exc, google_errors.InternalServerError | google_errors.DeadlineExceeded):
            return RetryableProviderError(message)
        return _classified_code(code, message)
    return RetryableProviderError(f"{what}: {type(exc).__name__}: {exc}")


def _operation_error_code(exc: google_errors.GoogleAPICallError) -> str:
    """The code in a failed zone operation (where stockouts and quota surface)."""
    operation = getattr(exc, "response", None)
    errors = getattr(getattr(operation, "error", None), "errors", None) or []
    return str(errors[0].code) if errors else ""


def _reason(exc: google_errors.GoogleAPICallError) -> str:
    reasons = [str(e.get("reason", "")) for e in (exc.errors or []) if isinstance(e, dict)]
    return reasons[0] if reasons else ""


class GcpProvider(RemoteDriver):
    provider_name = "gcp"

    def __init__(
        self,
        instances: compute_v1.InstancesClient,
        *,
        project: str,
        zone: str,
        image: str,
        network: str,
        offerings: Mapping[Platform, frozenset[int]],
        deployment_mark: str = "",
        agent: cloud.AgentChoice = cloud.AgentChoice(),
        operation_wait_seconds: float = DEFAULT_OPERATION_WAIT,
    ) -> None:
        self._instances = instances
        self._wait = operation_wait_seconds
        self._project = project
        self._zone = zone
        self._image = image
        self._network = network
        super().__init__(offerings)
        self._mark = deployment_mark
        self._agent = agent

    def create(self, request: MachineRequest) -> Machine:
        name = cloud.machine_name(request.cvm_id)
        existing = self._get(name)
        if existing is not None:
            return _machine(existing)
        try:
            operation = self._instances.insert(
                request=compute_v1.InsertInstanceRequest(
                    project=self._project,
                    zone=self._zone,
                    instance_resource=self._instance(request, name),
                    request_id=request_id_for(request.cvm_id, request.attempt),
                )
            )
            operation.result(timeout=self._wait)  # type: ignore[no-untyped-call]
        except google_errors.Conflict:
            # alreadyExists: an attempt before this one made it.
            found = self._get(name)
            return _machine(found) if found else Machine(name, MachineState.CREATING)
        except google_errors.GoogleAPICallError as exc:
            raise classified(exc, "instances.insert") from exc
        except TimeoutError:
            return Machine(provider_machine_id=name, state=MachineState.CREATING)
        if operation.error_code:
            raise _classified_code(
                str(operation.error_code), f"instances.insert: {operation.error_code}: "
                f"{operation.error_message}"
            )  # fmt: skip
        created = self._get(name)
        return _machine(created) if created else Machine(name, MachineState.CREATING)

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        name = provider_machine_id or cloud.machine_name(cvm_id)
        try:
            operation = self._instances.delete(
                project=self._project, zone=self._zone, instance=name
            )
            operation.result(timeout=self._wait)  # type: ignore[no-untyped-call]
        except google_errors.NotFound:
            return  # already gone
        except google_errors.GoogleAPICallError as exc:
            raise classified(exc, "instances.delete") from exc
        except TimeoutError as exc:
            raise RetryableProviderError("instances.delete: still running") from exc

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        found = self._get(provider_machine_id or cloud.machine_name(cvm_id))
        return _machine(found) if found is not None else None

    def owned_machines(self) -> Iterable[OwnedMachine]:
        if not self._mark:
            return []
        selector = f'labels.{cloud.TAG_MARK} = "{label_value(self._mark)}"'
        try:
            listed = self._instances.list(
                request=compute_v1.ListInstancesRequest(
                    project=self._project, zone=self._zone, filter=selector
                )
            )
            return [
                OwnedMachine(cvm_id=i.labels[cloud.TAG_CVM], provider_machine_id=i.name)
                for i in listed
                if cloud.TAG_CVM in i.labels
            ]
        except google_errors.GoogleAPICallError as exc:
            raise classified(exc, "instances.list") from exc

    def _get(self, name: str) -> compute_v1.Instance | None:
        try:
            return self._instances.get(project=self._project, zone=self._zone, instance=name)
        except google_errors.NotFound:
            return None
        except google_errors.GoogleAPICallError as exc:
            raise classified(exc, "instances.get") from exc

    def _instance(self, request: MachineRequest, name: str) -> compute_v1.Instance:
        family = FAMILIES[request.platform]
        instance = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{self._zone}/machineTypes/{family}-{request.vcpus}",
            confidential_instance_config=compute_v1.ConfidentialInstanceConfig(
                confidential_instance_type=CONFIDENTIAL_TYPES[request.platform]
            ),
            scheduling=compute_v1.Scheduling(on_host_maintenance="TERMINATE"),
            shielded_instance_config=compute_v1.ShieldedInstanceConfig(
                enable_vtpm=True, enable_secure_boot=True, enable_integrity_monitoring=True
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=self._image
                    ),
                )
            ],
            network_interfaces=[compute_v1.NetworkInterface(network=self._network)],
            labels={
                key: label_value(value) for key, value in cloud.tags(request, self._mark).items()
            },
            metadata=compute_v1.Metadata(
                items=[
                    compute_v1.Items(key="user-data", value=cloud.user_data(request, self._agent))
                ]
            ),
        )
        if request.platform is Platform.SEV_SNP:
            instance.min_cpu_platform = "AMD Milan"
        return instance


def _machine(instance: compute_v1.Instance) -> Machine:
    state = STATES.get(instance.status, MachineState.CREATING)
    addresses = [nic.network_i_p for nic in instance.network_interfaces if nic.network_i_p]
    return Machine(
        provider_machine_id=instance.name,
        state=state,
        agent_url=f"{addresses[0]}:7002" if addresses else "",
    )


def make_gcp(config: ProviderConfig) -> GcpProvider:
    settings, source = config.settings, config.source
    project = cloud.required_setting(settings, "project_id", source)
    region = cloud.required_setting(settings, "region", source)
    zone = cloud.required_setting(settings, "zone", source, default=f"{region}-a")
    image = cloud.required_setting(settings, "image", source)
    options = (
        ClientOptions(api_endpoint=settings["api_endpoint"])
        if settings.get("api_endpoint")
        else None
    )
    if settings.get("anonymous_credentials") is True:
        credentials: Any = AnonymousCredentials()  # type: ignore[no-untyped-call]
    elif settings.get("credentials_file"):
        credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(settings["credentials_file"])
        )
    else:
        credentials = None  # the SDK's default chain
    client = compute_v1.InstancesClient(credentials=credentials, client_options=options)
    return GcpProvider(
        client,
        project=project,
        zone=zone,
        image=image,
        network=str(settings.get("network", "global/networks/default")),
        offerings={
            Platform.SEV_SNP: vcpu_list(settings, "vcpusSEV", source),
            Platform.TDX: vcpu_list(settings, "vcpusTDX", source),
        },
        deployment_mark=config.deployment_mark,
        agent=cloud.agent_choice(settings, source),
        operation_wait_seconds=cloud.operation_wait_seconds(
            settings, source, DEFAULT_OPERATION_WAIT
        ),
    )
