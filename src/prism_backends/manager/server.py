"""The manager's endpoints: Cocos' ``manager.ManagerService`` and our
``prism.manager.v1.Inventory`` over gRPC with mutual TLS, and ``/health`` and
``/metrics`` over plain HTTP."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from prism_backends.agents.pki import (
    load_or_create_ca,
    load_or_create_server_credentials,
    write_private,
)
from prism_backends.manager import measure
from prism_backends.manager.proto import (
    inventory_pb2,
    inventory_pb2_grpc,
    manager_pb2,
    manager_pb2_grpc,
)
from prism_backends.manager.service import CreateRequest, ManagerError, VmManager
from prism_backends.manager.settings import ManagerSettings
from prism_backends.manager.vms import VmRecord

log = logging.getLogger(__name__)

STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
}
CLIENT_CERT_DAYS = 825
Reply = TypeVar("Reply")


def _answer(context: grpc.ServicerContext, work: Callable[[], Reply]) -> Reply:
    """Run one RPC's work, turning refusals into their gRPC status."""
    try:
        return work()
    except ManagerError as refused:
        context.abort(STATUS[refused.kind], str(refused))
    except measure.PolicyUnavailable as unavailable:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(unavailable))
    raise AssertionError("unreachable")  # abort raises


def _metadata_int(metadata: dict[str, str], key: str) -> int | None:
    raw = metadata.get(key, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ManagerError("invalid", f"{key} must be a positive integer, got {raw!r}")
    return int(raw)


class ManagerService(manager_pb2_grpc.ManagerServiceServicer):
    def __init__(self, vms: VmManager) -> None:
        self._vms = vms

    def CreateVm(  # noqa: N802 - the proto's name
        self, request: manager_pb2.CreateReq, context: grpc.ServicerContext
    ) -> manager_pb2.CreateRes:
        def work() -> manager_pb2.CreateRes:
            metadata = {key: str(value) for key, value in context.invocation_metadata()}
            record = self._vms.create(
                CreateRequest(
                    log_level=request.agent_log_level,
                    server_ca_cert=request.agent_cvm_server_ca_cert,
                    client_key=request.agent_cvm_client_key,
                    client_cert=request.agent_cvm_client_cert,
                    server_url=request.agent_cvm_server_url,
                    ca_url=request.agent_cvm_ca_url,
                    ttl=request.ttl,
                    vcpus=_metadata_int(metadata, "x-prism-vcpus"),
                    platform=metadata.get("x-prism-platform", ""),
                    memory_mib=_metadata_int(metadata, "x-prism-memory-mib"),
                )
            )
            return manager_pb2.CreateRes(forwarded_port=str(record.port), cvm_id=record.id)

        return _answer(context, work)

    def RemoveVm(  # noqa: N802
        self, request: manager_pb2.RemoveReq, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        def work() -> empty_pb2.Empty:
            self._vms.remove(request.cvm_id)
            return empty_pb2.Empty()

        return _answer(context, work)

    def CVMInfo(  # noqa: N802
        self, request: manager_pb2.CVMInfoReq, context: grpc.ServicerContext
    ) -> manager_pb2.CVMInfoRes:
        def work() -> manager_pb2.CVMInfoRes:
            record = self._vms.get(request.id)
            return manager_pb2.CVMInfoRes(
                id=record.id,
                ovmf_version=record.firmware,
                cpu_num=record.vcpus,
                cpu_type=record.cpu_type,
                kernel_cmd=record.kernel_command_line,
                eos_version=record.image,
            )

        return _answer(context, work)

    def AttestationPolicy(  # noqa: N802
        self, request: manager_pb2.AttestationPolicyReq, context: grpc.ServicerContext
    ) -> manager_pb2.AttestationPolicyRes:
        def work() -> manager_pb2.AttestationPolicyRes:
            policy = self._vms.policy(request.id, self._vms.settings.policy_format)
            return manager_pb2.AttestationPolicyRes(info=policy, id=request.id)

        return _answer(context, work)


class InventoryService(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, vms: VmManager) -> None:
        self._vms = vms

    def Capacity(  # noqa: N802
        self, request: inventory_pb2.CapacityReq, context: grpc.ServicerContext
    ) -> inventory_pb2.CapacityRes:
        capacity = self._vms.capacity()
        return inventory_pb2.CapacityRes(
            max_vms=capacity.max_vms,
            vms=capacity.vms,
            max_vcpus=capacity.max_vcpus,
            vcpus_used=capacity.vcpus_used,
            max_memory_mib=capacity.max_memory_mib,
            memory_used_mib=capacity.memory_used_mib,
            platforms=capacity.platforms,
            development=capacity.development,
            vcpu_counts=capacity.vcpu_counts,
        )

    def ListVms(  # noqa: N802
        self, request: inventory_pb2.ListVmsReq, context: grpc.ServicerContext
    ) -> inventory_pb2.ListVmsRes:
        return inventory_pb2.ListVmsRes(vms=[_vm_message(r) for r in self._vms.records()])

    def Policy(  # noqa: N802
        self, request: inventory_pb2.PolicyReq, context: grpc.ServicerContext
    ) -> inventory_pb2.PolicyRes:
        chosen = request.format or "json"

        def work() -> inventory_pb2.PolicyRes:
            if chosen not in ("json", "corim"):
                raise ManagerError("invalid", f"format must be json or corim, got {chosen!r}")
            return inventory_pb2.PolicyRes(
                policy=self._vms.policy(request.id, chosen), format=chosen
            )

        return _answer(context, work)


def _vm_message(record: VmRecord) -> inventory_pb2.Vm:
    return inventory_pb2.Vm(
        cvm_id=record.id,
        client_cert_sha256=record.client_cert_sha256,
        client_cert_subject=record.client_cert_subject,
        state=record.state,
        forwarded_port=str(record.port),
        vcpus=record.vcpus,
        platform=record.platform,
        confidential=record.confidential,
        created_at=record.created_at,
        expires_at=record.expires_at,
        client_cert_authority_key_id=record.client_cert_authority_key_id,
    )


# --- TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagerTls:
    server_cert: bytes
    server_key: bytes
    client_ca: bytes


def tls_dir(settings: ManagerSettings) -> Path:
    return settings.data_dir / "tls"


def load_or_create_tls(settings: ManagerSettings) -> ManagerTls:
    """The configured certificates, or a CA of the manager's own in DATA_DIR/tls
    with a server certificate and one client bundle (``tls/client/``) for a backend."""
    if settings.tls_cert and settings.tls_key and settings.client_ca:
        return ManagerTls(
            settings.tls_cert.read_bytes(),
            settings.tls_key.read_bytes(),
            settings.client_ca.read_bytes(),
        )
    directory = tls_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    ca = load_or_create_ca(directory, prefix="manager", common_name="prism-backends manager CA")
    server_cert, server_key = load_or_create_server_credentials(
        directory, ca, settings.server_names, prefix="manager"
    )
    client = directory / "client"
    if not (client / "cert.pem").is_file():
        client.mkdir(exist_ok=True)
        issued = ca.issue_client(
            "prism-backends", "manager-clients", timedelta(days=CLIENT_CERT_DAYS)
        )
        write_private(client / "key.pem", issued.key_pem)
        (client / "cert.pem").write_bytes(issued.cert_pem)
        (client / "ca.pem").write_bytes(ca.cert_pem)
    return ManagerTls(server_cert, server_key, ca.cert_pem)


# --- serving -----------------------------------------------------------------------------


class ManagerServer:
    def __init__(self, vms: VmManager, settings: ManagerSettings) -> None:
        self._vms = vms
        self._settings = settings
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="rpc")
        )
        manager_pb2_grpc.add_ManagerServiceServicer_to_server(ManagerService(vms), self._grpc)
        inventory_pb2_grpc.add_InventoryServicer_to_server(InventoryService(vms), self._grpc)
        self._http: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self.port = 0
        self.health_port = 0

    def start(self) -> None:
        tls = load_or_create_tls(self._settings)
        credentials = grpc.ssl_server_credentials(
            [(tls.server_key, tls.server_cert)],
            root_certificates=tls.client_ca,
            require_client_auth=True,
        )
        self.port = self._grpc.add_secure_port(
            f"{self._settings.host}:{self._settings.port}", credentials
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {self._settings.host}:{self._settings.port}")
        self._grpc.start()
        self._http = ThreadingHTTPServer(
            (self._settings.host, self._settings.health_port), _handler(self._vms)
        )
        self.health_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="health", daemon=True).start()
        threading.Thread(target=self._tick, name="ticks", daemon=True).start()
        (self._settings.data_dir / "manager.json").write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "port": self.port,
                    "health_port": self.health_port,
                    "host": self._settings.host,
                }
            )
        )
        log.info(
            "manager on %s:%d (health on %d)", self._settings.host, self.port, self.health_port
        )

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._vms.tick()
            except Exception:
                log.exception("manager tick failed")

    def stop(self) -> None:
        self._stop.set()
        self._grpc.stop(grace=2).wait(5)
        if self._http is not None:
            self._http.shutdown()
        self._vms.close()


def _handler(vms: VmManager) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                capacity = vms.capacity()
                self._send(
                    200,
                    "application/json",
                    json.dumps(
                        {
                            "status": "ok",
                            "vms": capacity.vms,
                            "max_vms": capacity.max_vms,
                            "accelerator": vms.host.accelerator.value,
                            "platforms": capacity.platforms,
                            "development": capacity.development,
                            "image": vms.image.digest,
                        }
                    ).encode(),
                )
            elif self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4", metrics_text(vms).encode())
            else:
                self._send(404, "application/json", b'{"error":"not_found"}')

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def metrics_text(vms: VmManager) -> str:
    capacity = vms.capacity()
    gauges = {
        "prism_manager_vms": capacity.vms,
        "prism_manager_max_vms": capacity.max_vms,
        "prism_manager_vcpus_used": capacity.vcpus_used,
        "prism_manager_max_vcpus": capacity.max_vcpus,
        "prism_manager_memory_used_mib": capacity.memory_used_mib,
        "prism_manager_max_memory_mib": capacity.max_memory_mib,
    }
    lines = []
    for name, value in gauges.items():
        lines += [f"# TYPE {name} gauge", f"{name} {value}"]
    lines.append("# TYPE prism_manager_vm_operations_total counter")
    for operation, count in sorted(vms.counters.items()):
        lines.append(f'prism_manager_vm_operations_total{{operation="{operation}"}} {count}')
    return "\n".join(lines) + "\n"
