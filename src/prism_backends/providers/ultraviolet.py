"""The ``ultraviolet`` provider: Ultraviolet's own hosts, each running a host
manager that speaks Cocos' ``manager.ManagerService`` (ours, or Cocos' own).

Configured as Prism deploys it (``[config]`` of the provider file)::

    sev_snp_url = "host-a:7019"          # a manager for SEV-SNP CVMs
    sev_snp_client_cert = "/etc/prism/manager/cert.pem"
    sev_snp_client_key = "/etc/prism/manager/key.pem"
    sev_snp_ca_cert = "/etc/prism/manager/ca.pem"
    tdx_url = "host-b:7019"              # and tdx_client_cert, ... for TDX
    defaultplanTTL = "24h"               # optional: each VM's TTL (Go duration)

or, for several managers, ``[[config.managers]]`` tables with ``url``,
``platforms`` (``["sev-snp", "tdx"]``), ``client_cert``, ``client_key`` and
``ca_cert``.

Placement asks each manager for its free capacity (our ``Inventory`` service)
and picks the one with the most room; a manager that cannot tell (a stock
Cocos manager) is tried last. ``cvm_id`` is the manager's VM id, ``agent_url``
``manager-host:forwarded-port``. Idempotency across managers: before creating,
the managers are asked for a VM whose agent certificate names this CVM. The
leak sweep lists every manager's VMs and claims those whose agent certificate
this deployment's CA issued; a stock Cocos manager cannot list, and there only
the TTL bounds a leak.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from prism_backends.manager.proto import (
    inventory_pb2,
    inventory_pb2_grpc,
    manager_pb2,
    manager_pb2_grpc,
)
from prism_backends.providers.base import (
    Machine,
    MachineRequest,
    MachineState,
    OwnedMachine,
    ProviderError,
    ProviderUnavailable,
    RemoteDriver,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError, vcpu_list
from prism_backends.vocabulary import Platform

log = logging.getLogger(__name__)

RPC_SECONDS = 60.0
PROBE_SECONDS = 5.0
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
_PRISM_KEYS = {Platform.SEV_SNP: "sev_snp", Platform.TDX: "tdx"}


@dataclass(frozen=True)
class ManagerEndpoint:
    url: str
    platforms: frozenset[Platform]
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes = field(repr=False)

    @property
    def host(self) -> str:
        return self.url.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class _Room:
    """What a manager said of its capacity, or None when it cannot say."""

    endpoint: ManagerEndpoint
    capacity: inventory_pb2.CapacityRes | None


def _classified(exc: grpc.RpcError, what: str) -> ProviderError:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    message = f"{what}: {code.name} {details}"
    if code in RETRYABLE:
        return RetryableProviderError(message)
    return TerminalProviderError(message)


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN


class UltravioletProvider(RemoteDriver):
    provider_name = "ultraviolet"

    def __init__(
        self,
        managers: list[ManagerEndpoint],
        offerings: Mapping[Platform, frozenset[int]],
        *,
        ttl: str = "",
        deployment_mark: str = "",
    ) -> None:
        self._managers = managers
        super().__init__(offerings)
        self._ttl = ttl
        self._mark = deployment_mark
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    # --- the Provider interface ----------------------------------------------------

    def create(self, request: MachineRequest) -> Machine:
        if request.agent is None:
            raise TerminalProviderError("the agent's credentials are missing from the request")
        serving = [m for m in self._managers if request.platform in m.platforms]
        existing = self._find(serving, subject=request.cvm_id)
        if existing is not None:
            endpoint, vm = existing
            return self._machine(endpoint, vm.cvm_id, vm.forwarded_port, vm.confidential)
        rooms = self._rooms(serving, request)
        if not rooms:
            raise RetryableProviderError(
                f"no {request.platform.value} manager has room for {request.vcpus} vCPUs now"
            )
        last_error: ProviderError | None = None
        for room in rooms:
            try:
                created = self._create_on(room.endpoint, request)
            except grpc.RpcError as exc:
                last_error = _classified(exc, f"CreateVm on {room.endpoint.url}")
                if _code(exc) is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    continue  # full since we asked: the next manager may take it
                raise last_error from exc
            confidential = room.capacity is None or request.platform.value in list(
                room.capacity.platforms
            )
            return self._machine(
                room.endpoint, created.cvm_id, created.forwarded_port, confidential
            )
        assert last_error is not None
        raise last_error

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        machine_id = provider_machine_id
        if not machine_id:
            found = self._find(self._managers, subject=cvm_id)
            if found is None:
                return  # it never reached a manager
            machine_id = found[1].cvm_id
        unreachable = []
        for endpoint in self._managers:
            try:
                self._manager(endpoint).RemoveVm(
                    manager_pb2.RemoveReq(cvm_id=machine_id), timeout=RPC_SECONDS
                )
                return
            except grpc.RpcError as exc:
                if _code(exc) is grpc.StatusCode.NOT_FOUND:
                    continue
                if _code(exc) in RETRYABLE:
                    unreachable.append(endpoint.url)
                    continue
                raise _classified(exc, f"RemoveVm on {endpoint.url}") from exc
        if unreachable:
            raise RetryableProviderError(
                f"VM {machine_id} is on no reachable manager; not asked: {', '.join(unreachable)}"
            )

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        for endpoint in self._managers:
            for vm in self._list(endpoint):
                if vm.cvm_id == provider_machine_id or (
                    not provider_machine_id and vm.client_cert_subject == cvm_id
                ):
                    machine = self._machine(endpoint, vm.cvm_id, vm.forwarded_port, vm.confidential)
                    if vm.state == "stopped":
                        return Machine(
                            machine.provider_machine_id, MachineState.STOPPED, machine.agent_url
                        )
                    return machine
        return None

    def owned_machines(self) -> Iterable[OwnedMachine]:
        if not self._mark:
            return []  # without our mark, nothing on a shared manager is provably ours
        owned = []
        for endpoint in self._managers:
            for vm in self._list(endpoint):
                if vm.client_cert_authority_key_id == self._mark and vm.client_cert_subject:
                    owned.append(
                        OwnedMachine(cvm_id=vm.client_cert_subject, provider_machine_id=vm.cvm_id)
                    )
        return owned

    def take_offerings_from_managers(self) -> None:
        """Offer what the managers say they offer; keep the configured lists when
        none of them can say (unreachable now, or stock Cocos managers)."""
        offered: dict[Platform, set[int]] = {}
        answered = False
        for endpoint in self._managers:
            try:
                capacity = self.capacity(endpoint, timeout=PROBE_SECONDS)
            except grpc.RpcError as exc:
                log.warning("manager %s is not reachable now: %s", endpoint.url, _code(exc).name)
                continue
            if capacity is None:
                continue
            answered = True
            for platform in endpoint.platforms:
                if platform.value in list(capacity.platforms) or capacity.development:
                    offered.setdefault(platform, set()).update(capacity.vcpu_counts)
        if answered:
            self._offerings = {
                platform: frozenset(counts) for platform, counts in offered.items() if counts
            }

    # --- talking to managers --------------------------------------------------------

    def _channel(self, endpoint: ManagerEndpoint) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(endpoint.url)
            if channel is None:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=endpoint.ca_cert,
                    private_key=endpoint.client_key,
                    certificate_chain=endpoint.client_cert,
                )
                channel = grpc.secure_channel(endpoint.url, credentials)
                self._channels[endpoint.url] = channel
            return channel

    def _manager(self, endpoint: ManagerEndpoint) -> manager_pb2_grpc.ManagerServiceStub:
        return manager_pb2_grpc.ManagerServiceStub(self._channel(endpoint))

    def _inventory(self, endpoint: ManagerEndpoint) -> inventory_pb2_grpc.InventoryStub:
        return inventory_pb2_grpc.InventoryStub(self._channel(endpoint))

    def capacity(
        self, endpoint: ManagerEndpoint, timeout: float = RPC_SECONDS
    ) -> inventory_pb2.CapacityRes | None:
        """The manager's capacity; None for a manager without our Inventory service."""
        try:
            return self._inventory(endpoint).Capacity(inventory_pb2.CapacityReq(), timeout=timeout)
        except grpc.RpcError as exc:
            if _code(exc) is grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise

    def _list(self, endpoint: ManagerEndpoint) -> list[inventory_pb2.Vm]:
        try:
            return list(
                self._inventory(endpoint)
                .ListVms(inventory_pb2.ListVmsReq(), timeout=RPC_SECONDS)
                .vms
            )
        except grpc.RpcError as exc:
            if _code(exc) is grpc.StatusCode.UNIMPLEMENTED:
                return []  # a stock Cocos manager cannot list its VMs
            raise _classified(exc, f"ListVms on {endpoint.url}") from exc

    def _find(
        self, managers: list[ManagerEndpoint], *, subject: str
    ) -> tuple[ManagerEndpoint, inventory_pb2.Vm] | None:
        for endpoint in managers:
            for vm in self._list(endpoint):
                if vm.client_cert_subject == subject and vm.state != "stopped":
                    return endpoint, vm
        return None

    def _rooms(self, managers: list[ManagerEndpoint], request: MachineRequest) -> list[_Room]:
        """The managers that can take this VM, the roomiest first; those that
        cannot tell their capacity after them."""
        measured: list[tuple[inventory_pb2.CapacityRes, ManagerEndpoint]] = []
        unknown: list[_Room] = []
        for endpoint in managers:
            try:
                capacity = self.capacity(endpoint)
            except grpc.RpcError as exc:
                log.warning("manager %s did not answer: %s", endpoint.url, _code(exc).name)
                continue
            if capacity is None:
                unknown.append(_Room(endpoint, None))
            elif _fits(capacity, request):
                measured.append((capacity, endpoint))
        measured.sort(key=lambda pair: _room_left(pair[0]), reverse=True)
        return [_Room(endpoint, capacity) for capacity, endpoint in measured] + unknown

    def _create_on(
        self, endpoint: ManagerEndpoint, request: MachineRequest
    ) -> manager_pb2.CreateRes:
        agent = request.agent
        assert agent is not None
        reply: manager_pb2.CreateRes = self._manager(endpoint).CreateVm(
            manager_pb2.CreateReq(
                agent_log_level=request.agent_log_level.value,
                agent_cvm_server_ca_cert=agent.ca_cert_pem,
                agent_cvm_client_key=agent.client_key_pem,
                agent_cvm_client_cert=agent.client_cert_pem,
                agent_cvm_server_url=agent.server_url,
                ttl=self._ttl,
            ),
            metadata=(
                ("x-prism-vcpus", str(request.vcpus)),
                ("x-prism-platform", request.platform.value),
            ),
            timeout=RPC_SECONDS,
        )
        return reply

    def _machine(
        self, endpoint: ManagerEndpoint, vm_id: str, port: str, confidential: bool
    ) -> Machine:
        policy, detail = self._policy(endpoint, vm_id) if confidential else (None, "")
        if not confidential:
            detail = (
                f"not confidential: manager {endpoint.url} runs this CVM as a plain VM (no "
                "SEV-SNP or TDX on that host, development mode); its attestation cannot succeed"
            )
        return Machine(
            provider_machine_id=vm_id,
            state=MachineState.RUNNING,
            agent_url=f"{endpoint.host}:{port}" if port else "",
            detail=detail,
            attestation_policy=policy,
            confidential=confidential,
        )

    def _policy(self, endpoint: ManagerEndpoint, vm_id: str) -> tuple[bytes | None, str]:
        """The VM's policy: JSON from our manager (what the appraiser reads), as
        served by a stock Cocos manager otherwise."""
        try:
            reply = self._inventory(endpoint).Policy(
                inventory_pb2.PolicyReq(id=vm_id, format="json"), timeout=RPC_SECONDS
            )
            return bytes(reply.policy), ""
        except grpc.RpcError as exc:
            if _code(exc) is not grpc.StatusCode.UNIMPLEMENTED:
                return None, f"no attestation policy from the manager: {_code(exc).name}"
        try:
            served = self._manager(endpoint).AttestationPolicy(
                manager_pb2.AttestationPolicyReq(id=vm_id), timeout=RPC_SECONDS
            )
            return bytes(served.info), ""
        except grpc.RpcError as exc:
            return None, f"no attestation policy from the manager: {_code(exc).name}"


def _room_left(capacity: inventory_pb2.CapacityRes) -> tuple[int, int]:
    """Free vCPUs, then free VM slots: the order placement prefers managers in."""
    return capacity.max_vcpus - capacity.vcpus_used, capacity.max_vms - capacity.vms


def _fits(capacity: inventory_pb2.CapacityRes, request: MachineRequest) -> bool:
    platform_ok = request.platform.value in list(capacity.platforms) or capacity.development
    counts = list(capacity.vcpu_counts)
    return (
        platform_ok
        and (not counts or request.vcpus in counts)
        and capacity.vms < capacity.max_vms
        and capacity.vcpus_used + request.vcpus <= capacity.max_vcpus
    )


# --- configuration --------------------------------------------------------------------


def _read(settings: Mapping[str, Any], key: str, source: str) -> bytes:
    value = settings.get(key)
    if not isinstance(value, str) or not value:
        raise ProviderConfigError(f"{source}: [config] {key} must be a file path")
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ProviderConfigError(f"{source}: [config] {key}: {exc.strerror}") from None


def managers_from(settings: Mapping[str, Any], source: str) -> list[ManagerEndpoint]:
    """Prism's per-platform keys and any ``[[config.managers]]`` tables."""
    endpoints: list[ManagerEndpoint] = []
    for platform, prefix in _PRISM_KEYS.items():
        url = settings.get(f"{prefix}_url")
        if url:
            if not isinstance(url, str):
                raise ProviderConfigError(f"{source}: [config] {prefix}_url must be host:port")
            endpoints.append(
                ManagerEndpoint(
                    url=url.removeprefix("grpc://").removeprefix("https://"),
                    platforms=frozenset({platform}),
                    ca_cert=_read(settings, f"{prefix}_ca_cert", source),
                    client_cert=_read(settings, f"{prefix}_client_cert", source),
                    client_key=_read(settings, f"{prefix}_client_key", source),
                )
            )
    tables = settings.get("managers", [])
    if not isinstance(tables, list):
        raise ProviderConfigError(f"{source}: [[config.managers]] must be an array of tables")
    for index, table in enumerate(tables):
        where = f"{source} [[config.managers]] #{index + 1}"
        if not isinstance(table, dict) or not isinstance(table.get("url"), str):
            raise ProviderConfigError(f'{where}: needs url = "host:port"')
        raw_platforms = table.get("platforms", ["sev-snp", "tdx"])
        if not isinstance(raw_platforms, list) or not all(
            item in ("sev-snp", "tdx") for item in raw_platforms
        ):
            raise ProviderConfigError(f"{where}: platforms must list sev-snp and/or tdx")
        endpoints.append(
            ManagerEndpoint(
                url=table["url"],
                platforms=frozenset(Platform(item) for item in raw_platforms),
                ca_cert=_read(table, "ca_cert", where),
                client_cert=_read(table, "client_cert", where),
                client_key=_read(table, "client_key", where),
            )
        )
    return endpoints


def make_ultraviolet(config: ProviderConfig) -> UltravioletProvider:
    source = config.source
    managers = managers_from(config.settings, source)
    if not managers:
        raise ProviderUnavailable(
            "no manager is configured (sev_snp_url, tdx_url or [[config.managers]])"
        )
    ttl = config.settings.get("defaultplanTTL", config.settings.get("ttl", ""))
    if not isinstance(ttl, str):
        raise ProviderConfigError(f"{source}: [config] defaultplanTTL must be a Go duration string")
    configured = {
        Platform.SEV_SNP: vcpu_list(config.settings, "vcpusSEV", source),
        Platform.TDX: vcpu_list(config.settings, "vcpusTDX", source),
    }
    provider = UltravioletProvider(
        managers, configured, ttl=ttl, deployment_mark=config.deployment_mark
    )
    provider.take_offerings_from_managers()
    return provider
