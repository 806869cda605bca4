"""A loopback fake of the Compute Engine REST subset the gcp driver uses:
instances insert / get / delete / list (with a label filter) and zone
operations get / wait. It remembers what it made, applies ``requestId``
(the same id returns the same operation and makes nothing new), records every
insert body, and fails on command, as the cloud does: in the operation's
``error`` (stockouts, quota) or as an HTTP error (permissions, bad input)."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes import loopback
from tests.fakes.chaos import Chaos, Injected, Trouble

ZONE = re.compile(
    r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/(instances|operations)(?:/([^/]+))?(/wait)?$"
)


@dataclass
class FakeCompute:
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_request_id: dict[str, str] = field(default_factory=dict)
    inserts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Injected] = field(default_factory=list)
    chaos: Chaos = field(default_factory=Chaos)
    created: Counter[str] = field(default_factory=Counter)  # instances ever made, by name
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def operation(
        self, zone: str, target: str, kind: str, error: Injected | None = None
    ) -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        done: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "zone": zone,
            "operationType": kind,
            "targetLink": target,
            "status": "DONE",
            "progress": 100,
        }
        if error is not None:
            done["error"] = {"errors": [{"code": error.code, "message": error.message}]}
            done["httpErrorStatusCode"] = 503 if "EXHAUSTED" in error.code else 403
            done["httpErrorMessage"] = error.message
        self.operations[name] = done
        return done


def serve(fake: FakeCompute) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, reason: str, message: str) -> None:
            errors = [{"reason": reason, "message": message}]
            self._send(status, {"error": {"code": status, "message": message, "errors": errors}})

        def _route(self) -> tuple[re.Match[str] | None, dict[str, list[str]]]:
            parsed = urlparse(self.path)
            return ZONE.match(parsed.path), parse_qs(parsed.query)

        def do_GET(self) -> None:
            match, query = self._route()
            if match is None:
                return self._error(404, "notFound", self.path)
            _project, _zone, kind, name, _wait = match.groups()
            with fake.lock:
                if kind == "operations":
                    found = fake.operations.get(name or "")
                    return (
                        self._send(200, found)
                        if found
                        else self._error(404, "notFound", name or "")
                    )
                if name:
                    instance = fake.instances.get(name)
                    if instance is None:
                        return self._error(404, "notFound", f"instance {name} not found")
                    return self._send(200, instance)
                items = list(fake.instances.values())
            for clause in query.get("filter", []):
                key, _, value = clause.partition("=")
                label = key.strip().removeprefix("labels.")
                wanted = value.strip().strip('"')
                items = [i for i in items if i.get("labels", {}).get(label) == wanted]
            return self._send(200, {"kind": "compute#instanceList", "items": items})

        def do_POST(self) -> None:
            match, query = self._route()
            if match is None:
                return self._error(404, "notFound", self.path)
            _project, zone, kind, name, wait = match.groups()
            if kind == "operations" and wait:
                with fake.lock:
                    found = fake.operations.get(name or "")
                return self._send(200, found) if found else self._error(404, "notFound", name or "")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            request_id = query.get("requestId", [""])[0]
            trouble = fake.chaos.draw()
            if trouble is Trouble.BEFORE:
                return self._error(503, "backendError", "injected: the backend is unavailable")
            with fake.lock:
                fake.inserts.append({"requestId": request_id, "body": body})
                if request_id in fake.by_request_id:
                    return self._send(200, fake.operations[fake.by_request_id[request_id]])
                if body["name"] in fake.instances:  # names are unique in a zone
                    return self._error(409, "alreadyExists", f"{body['name']} already exists")
                failure = fake.failures.pop(0) if fake.failures else None
                if failure is not None and failure.http_status:
                    return self._error(failure.http_status, failure.code, failure.message)
                target = f"projects/p/zones/{zone}/instances/{body['name']}"
                if failure is None:
                    fake.created[body["name"]] += 1
                    fake.instances[body["name"]] = {
                        **body, "id": str(next(fake._ids)), "status": "RUNNING", "zone": zone,
                        "networkInterfaces": [{"networkIP": "10.128.0.7"}],
                    }  # fmt: skip
                operation = fake.operation(zone, target, "insert", failure)
                if request_id:
                    fake.by_request_id[request_id] = operation["name"]
            if trouble is Trouble.AFTER:
                return self._error(500, "backendError", "injected: the answer was lost")
            return self._send(200, operation)

        def do_DELETE(self) -> None:
            match, _query = self._route()
            if match is None or not match.group(4):
                return self._error(404, "notFound", self.path)
            zone, name = match.group(2), match.group(4)
            with fake.lock:
                if fake.instances.pop(name, None) is None:
                    return self._error(404, "notFound", f"instance {name} not found")
                operation = fake.operation(
                    zone, f"projects/p/zones/{zone}/instances/{name}", "delete"
                )
            return self._send(200, operation)

    return loopback.start(Handler)
