"""``serve`` as a process: it says where the HTTP API listens only once it does."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.served import Processes, free_port

pytestmark = pytest.mark.slow


def test_http_api_on_is_logged_once_bound_and_never_when_the_port_is_taken(
    embedded: Processes,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        embedded.spawn("busy", "serve", "--port", str(busy), "--agents-port", str(free_port()))
        code = embedded.exit_code("busy", timeout=60)
    log = embedded.log("busy")
    assert code != 0, log
    assert "HTTP API on" not in log
    assert "address already in use" in log.lower()

    port = free_port()
    embedded.spawn("serve", "serve", "--port", str(port), "--agents-port", str(free_port()))
    embedded.wait_log("serve", f"HTTP API on http://127.0.0.1:{port}/backends", 60)
    # Said once bound: it answers at that very moment.
    assert httpx.get(f"http://127.0.0.1:{port}/backends/health").status_code == 200
