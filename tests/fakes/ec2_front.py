"""EC2 as the aws driver meets it, for tests that need the cloud's behaviour
moto leaves out: moto's EC2 server (it remembers what it made) behind a
loopback front that applies ``ClientToken`` (a repeated RunInstances returns
the first answer and makes nothing new, as EC2 does) and ``Chaos`` (latency,
capacity refusals, answers lost after the instance was made)."""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes import loopback
from tests.fakes.chaos import Chaos, Trouble


def _error(code: str, message: str) -> bytes:
    """An EC2 error reply, as the Query API writes it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message>"
        "</Error></Errors><RequestID>injected</RequestID></Response>"
    ).encode()


CAPACITY_ERROR = _error("InsufficientInstanceCapacity", "injected: no capacity")
LOST_ANSWER = _error("InternalError", "injected: the answer was lost")


@dataclass
class Ec2Front:
    moto_url: str
    chaos: Chaos = field(default_factory=Chaos)
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # ClientToken -> reply
    failures: list[tuple[int, str]] = field(default_factory=list)  # (status, code): next calls
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forward(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, bytes]:
        target = urlparse(self.moto_url)
        connection = http.client.HTTPConnection(
            target.hostname or "127.0.0.1", target.port, timeout=60
        )
        try:
            wanted = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, path, body=body, headers=wanted)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def run_instances(self, path: str, body: bytes, headers: Any, token: str) -> tuple[int, bytes]:
        with self.lock:
            if token and token in self.answers:
                return self.answers[token]
        with self.lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return failure[0], _error(failure[1], "injected")
        trouble = self.chaos.draw()
        if trouble is Trouble.BEFORE:
            return 500, CAPACITY_ERROR
        with self.lock:  # one RunInstances per token at a time, as EC2 keeps it
            if token and token in self.answers:
                return self.answers[token]
            answer = self.forward("POST", path, body, headers)
            if token and answer[0] == 200:
                self.answers[token] = answer
        return (500, LOST_ANSWER) if trouble is Trouble.AFTER else answer


def serve(front: Ec2Front) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            form = parse_qs(body.decode())
            if form.get("Action") == ["RunInstances"]:
                token = form.get("ClientToken", [""])[0]
                return self._reply(*front.run_instances(self.path, body, self.headers, token))
            return self._reply(*front.forward("POST", self.path, body, self.headers))

    return loopback.start(Handler)
