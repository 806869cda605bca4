"""A loopback fake of the Azure Resource Manager subset the azure driver uses:
virtual machines put / get (with the instance view) / delete / list in a
resource group, as long-running operations polled through the
``Azure-AsyncOperation`` header, as ARM does.

It remembers what it made (a VM and the NIC, public IP and disk created with
it, each gone with the VM when its ``deleteOption`` says Delete), records
every PUT body and its Authorization header, and fails on command: on the
call itself (an HTTP status with an ARM error code) or in the operation (the
VM ends ``Failed``, as an allocation failure does). An operation runs for
``operation_seconds`` whether or not anyone polls it, as ARM's do.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes import loopback
from tests.fakes.chaos import Chaos, Injected, Trouble

VM_PATH = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute"
    r"/virtualMachines(?:/([^/]+))?$"
)
OPERATION_PATH = re.compile(r"^/fake-operations/([^/]+)$")


@dataclass
class Operation:
    vm: str
    kind: str  # create | delete
    ready_at: float
    failure: Injected | None = None
    status: str = "InProgress"


@dataclass
class FakeArm:
    operation_seconds: float = 0.1  # how long an operation runs
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)  # NIC / IP / disk id -> its VM
    operations: dict[str, Operation] = field(default_factory=dict)
    puts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Injected] = field(default_factory=list)
    chaos: Chaos = field(default_factory=Chaos)
    created: Counter[str] = field(default_factory=Counter)  # VMs ever made, by name
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def live_names(self) -> list[str]:
        with self.lock:
            return sorted(self.vms)

    def put(self, name: str, body: dict[str, Any], authorization: str) -> tuple[int, Any, str]:
        """(status, body, operation id) for a PUT of VM ``name``."""
        self.puts.append({"name": name, "body": body, "authorization": authorization})
        if name in self.vms:
            return 200, self.vms[name], ""  # ARM PUT is idempotent on the name
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None and failure.http_status:
            error = {"error": {"code": failure.code, "message": failure.message}}
            return failure.http_status, error, ""
        properties = dict(body.get("properties", {}))
        properties.update(provisioningState="Creating", vmId=f"vm-{next(self._ids)}")
        vm = {**body, "name": name, "id": f"/vm/{name}", "properties": properties}
        self.vms[name] = vm
        self.created[name] += 1
        for resource in _inline_resources(name, properties):
            self.resources[resource] = name
        return 201, vm, self._operation(name, "create", failure)

    def delete(self, name: str) -> tuple[int, str]:
        vm = self.vms.get(name)
        if vm is None:
            return 204, ""
        vm["properties"]["provisioningState"] = "Deleting"
        return 202, self._operation(name, "delete", None)

    def advance(self) -> None:
        """Finish the operations whose time has come (called on every request)."""
        now = time.monotonic()
        for operation in list(self.operations.values()):
            if operation.status == "InProgress" and now >= operation.ready_at:
                self._finish(operation)

    def poll(self, operation_id: str) -> dict[str, Any] | None:
        operation = self.operations.get(operation_id)
        if operation is None:
            return None
        reply: dict[str, Any] = {"name": operation_id, "status": operation.status}
        if operation.status == "Failed" and operation.failure is not None:
            reply["error"] = {"code": operation.failure.code, "message": operation.failure.message}
        return reply

    def _operation(self, vm: str, kind: str, failure: Injected | None) -> str:
        operation_id = f"op-{next(self._ids)}"
        ready_at = time.monotonic() + self.operation_seconds
        self.operations[operation_id] = Operation(vm, kind, ready_at, failure)
        return operation_id

    def _finish(self, operation: Operation) -> None:
        vm = self.vms.get(operation.vm)
        if operation.kind == "delete":
            operation.status = "Succeeded"
            if vm is not None:
                self._remove(operation.vm)
            return
        if vm is None:
            operation.status = "Canceled"
            return
        if operation.failure is not None:
            operation.status = "Failed"
            vm["properties"]["provisioningState"] = "Failed"
            vm["_statuses"] = [
                {
                    "code": f"ProvisioningState/failed/{operation.failure.code}",
                    "level": "Error",
                    "message": operation.failure.message,
                }
            ]
            return
        operation.status = "Succeeded"
        vm["properties"]["provisioningState"] = "Succeeded"
        vm["_statuses"] = [
            {"code": "ProvisioningState/succeeded", "level": "Info"},
            {"code": "PowerState/running", "level": "Info"},
        ]

    def _remove(self, name: str) -> None:
        vm = self.vms.pop(name)
        kept = set(_inline_resources(name, vm["properties"], only_kept=True))
        for resource in [r for r, owner in self.resources.items() if owner == name]:
            if resource not in kept:
                del self.resources[resource]

    def view(self, vm: dict[str, Any], expand: str) -> dict[str, Any]:
        shown = {key: value for key, value in vm.items() if not key.startswith("_")}
        if expand == "instanceView":
            shown["properties"] = {
                **vm["properties"],
                "instanceView": {"statuses": vm.get("_statuses", [])},
            }
        return shown


def _inline_resources(name: str, properties: dict[str, Any], only_kept: bool = False) -> list[str]:
    """The NIC, IP and disk a VM brings; with ``only_kept``, those not deleted with it."""
    found: list[tuple[str, str]] = []
    disk = properties.get("storageProfile", {}).get("osDisk", {})
    found.append((f"disk/{name}", disk.get("deleteOption", "Detach")))
    for nic in properties.get("networkProfile", {}).get("networkInterfaceConfigurations", []):
        nic_properties = nic.get("properties", {})
        found.append((f"nic/{nic.get('name')}", nic_properties.get("deleteOption", "Detach")))
        for ip in nic_properties.get("ipConfigurations", []):
            public = ip.get("properties", {}).get("publicIPAddressConfiguration")
            if public:
                option = public.get("properties", {}).get("deleteOption", "Detach")
                found.append((f"ip/{public.get('name')}", option))
    return [r for r, option in found if not only_kept or option != "Delete"]


def serve(fake: FakeArm) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(
            self, status: int, body: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, what: str) -> None:
            code = "ResourceNotFound"
            self._send(404, {"error": {"code": code, "message": f"{what} was not found"}})

        def _operation_headers(self, operation_id: str) -> dict[str, str]:
            host = self.headers.get("Host", "127.0.0.1")
            url = f"http://{host}/fake-operations/{operation_id}?api-version=2024-07-01"
            return {"Azure-AsyncOperation": url, "retry-after-ms": "50"}

        def _route(self) -> tuple[re.Match[str] | None, dict[str, list[str]]]:
            parsed = urlparse(self.path)
            return VM_PATH.match(parsed.path), parse_qs(parsed.query)

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            operation = OPERATION_PATH.match(parsed.path)
            if operation is not None:
                with fake.lock:
                    fake.advance()
                    reply = fake.poll(operation.group(1))
                if reply is None:
                    return self._not_found("operation")
                return self._send(200, reply, {"retry-after-ms": "50"})
            match, query = self._route()
            if match is None:
                return self._not_found(self.path)
            name = match.group(3)
            expand = query.get("$expand", [""])[0]
            with fake.lock:
                fake.advance()
                if name is None:
                    items = [fake.view(vm, expand) for vm in fake.vms.values()]
                    return self._send(200, {"value": items})
                vm = fake.vms.get(name)
                if vm is None:
                    return self._not_found(f"virtual machine {name}")
                return self._send(200, fake.view(vm, expand))

        def do_PUT(self) -> None:
            match, _query = self._route()
            if match is None or match.group(3) is None:
                return self._not_found(self.path)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            trouble = fake.chaos.draw()
            if trouble is Trouble.BEFORE:
                error = {"code": "AllocationFailed", "message": "injected: no capacity"}
                return self._send(409, {"error": error})
            with fake.lock:
                fake.advance()
                status, reply, operation_id = fake.put(
                    match.group(3), body, self.headers.get("Authorization", "")
                )
                shown = fake.view(reply, "") if "error" not in reply else reply
            if trouble is Trouble.AFTER:
                error = {"code": "InternalServerError", "message": "injected: the answer was lost"}
                return self._send(500, {"error": error})
            headers = self._operation_headers(operation_id) if operation_id else {}
            return self._send(status, shown, headers)

        def do_DELETE(self) -> None:
            match, _query = self._route()
            if match is None or match.group(3) is None:
                return self._not_found(self.path)
            with fake.lock:
                fake.advance()
                status, operation_id = fake.delete(match.group(3))
            headers = self._operation_headers(operation_id) if operation_id else {}
            return self._send(status, None, headers)

    return loopback.start(Handler)
