from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from prism_backends.config import Settings
from prism_backends.console.signin import SignInCodes
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime
from tests.conftest import auth
from tests.served import free_port

SIGN_IN = "/backends/ui/sign-in"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_code_works_once_and_only_within_its_lifetime() -> None:
    clock = Clock()
    codes = SignInCodes(ttl_seconds=60, clock=clock)
    first, second = codes.mint(), codes.mint()
    assert first != second
    assert codes.redeem(first)
    assert not codes.redeem(first)
    assert not codes.redeem("not-a-code")
    clock.now += 61
    assert not codes.redeem(second)


@pytest.fixture
def loopback_client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime), client=("127.0.0.1", 50000))


def test_the_code_buys_an_admin_token_of_the_sign_in_domain_once(
    runtime: Runtime, loopback_client: TestClient
) -> None:
    code = runtime.sign_in_codes.mint()
    response = loopback_client.post(SIGN_IN, json={"code": code})
    assert response.status_code == 200, response.text
    body = response.json()
    domain = runtime.settings.sign_in_domain
    assert body["domain_id"] == domain
    assert 0 < body["expires_in"] <= 12 * 3600
    created = loopback_client.post(
        f"/backends/{domain}/cvms/external/2/sev-snp",
        headers=auth(body["access_token"]),
        json={"name": "from-the-console"},
    )
    assert created.status_code == 201, created.text
    again = loopback_client.post(SIGN_IN, json={"code": code})
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_code"


def test_the_code_is_refused_from_another_machine(runtime: Runtime, client: TestClient) -> None:
    code = runtime.sign_in_codes.mint()
    response = client.post(SIGN_IN, json={"code": code})  # the test client is not loopback
    assert response.status_code == 403
    assert "only from this machine" in response.json()["message"]
    # Refused before it was spent: the same code still works from loopback.
    local = TestClient(create_app(runtime), client=("::1", 50000))
    assert local.post(SIGN_IN, json={"code": code}).status_code == 200


@pytest.mark.parametrize("body", [{}, {"code": 5}, {"code": "x" * 300}, "not json"])
def test_a_malformed_sign_in_is_a_400(loopback_client: TestClient, body: object) -> None:
    response = loopback_client.post(SIGN_IN, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_the_console_is_served_with_a_strict_policy(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307
    assert root.headers["location"] == "/backends/ui/"
    bare = client.get("/backends/ui", follow_redirects=False)
    assert bare.headers["location"] == "/backends/ui/"
    page = client.get("/backends/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"


def test_the_console_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    runtime = Runtime(make_settings(console=False))
    try:
        off = TestClient(create_app(runtime))
        assert off.get("/backends/ui/").status_code == 404
        assert off.get("/backends/health").status_code == 200
    finally:
        runtime.close()


@pytest.mark.parametrize("flag", [[], ["--no-sign-in-link"]])
def test_serve_prints_a_working_link_on_a_terminal_and_logs_no_code(
    tmp_path: Path, flag: list[str]
) -> None:
    port, agents_port = free_port(), free_port()
    primary, replica = pty.openpty()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prism_backends",
                "serve",
                "--port",
                str(port),
                "--agents-port",
                str(agents_port),
                "--data-dir",
                str(tmp_path / "data"),
                *flag,
            ],
            stdout=replica,
            stderr=log_file,
            env={**os.environ, "NO_COLOR": "1"},
        )
    os.close(replica)
    try:
        _wait_for(lambda: b"HTTP API on" in log_path.read_bytes(), serve)
        printed = _drain(primary, wait=1.0)
        if flag:
            assert b"#code=" not in printed
            return
        link = re.search(rb"(http://127\.0\.0\.1:\d+/backends/ui/)#code=([A-Za-z0-9_-]+)", printed)
        assert link, printed
        code = link.group(2).decode()
        exchanged = httpx.post(f"http://127.0.0.1:{port}{SIGN_IN}", json={"code": code})
        assert exchanged.status_code == 200, exchanged.text
        assert httpx.get(link.group(1).decode()).status_code == 200
        again = httpx.post(f"http://127.0.0.1:{port}{SIGN_IN}", json={"code": code})
        assert again.status_code == 401
        assert code not in log_path.read_text()
        assert exchanged.json()["access_token"] not in log_path.read_text()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        os.close(primary)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, "serve exited"
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.2)


def _drain(fd: int, wait: float = 0.2) -> bytes:
    seen = b""
    while select.select([fd], [], [], wait)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        wait = 0.05
    return seen
