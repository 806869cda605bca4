"""The README's walk-through as written: its commands run in order against a
real ``serve``, its example reply has the fields the service returns, its SDK
snippet runs, its profile file is one the CLI reads."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from prism_backends.cli import connection
from prism_backends.client import Client
from tests.client.service import Service, service
from tests.served import DIAL_TIMEOUT, DOMAIN, START_TIMEOUT

__all__ = ["service"]

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
WHOLE_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _block(language: str, containing: str) -> str:
    """The README's one fenced ``language`` block that contains ``containing``."""
    found = [
        body
        for body in re.findall(rf"^```{language}\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
        if containing in body
    ]
    assert len(found) == 1, f"{len(found)} {language} blocks contain {containing!r}"
    return str(found[0])


def _shell(service: Service, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash with the variables the walk-through sets, ``pb`` being this
    checkout's ``prism-backends``; stops at the first command that fails."""
    pb = f'pb() {{ {shlex.quote(sys.executable)} -m prism_backends "$@"; }}\n'
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
    variables = {
        "D": DOMAIN,
        "TOKEN": service.token,
        "B": service.url,
        "PRISM_BACKENDS_URL": service.url,
        "PRISM_BACKENDS_TOKEN": service.token,
    }
    return subprocess.run(
        ["bash", "-e", "-c", pb + script],
        env={**clean, **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_the_create_commands_run_in_order_and_reply_as_shown(service: Service) -> None:
    done = _shell(service, _block("sh", "pb cvms create "))
    assert done.returncode == 0, done.stderr
    # curl -i: the status and the headers, an empty line, the body (text mode reads
    # the CRLFs as newlines).
    body = done.stdout[done.stdout.index("\n\n") + 2 :]
    reply, _ = json.JSONDecoder().raw_decode(body)
    shown = json.loads(_block("json", '"name":"example-cvm"'))
    assert list(shown) == list(reply)
    for field in ("created_at", "updated_at"):
        assert WHOLE_SECONDS.fullmatch(reply[field]), reply[field]
        assert WHOLE_SECONDS.fullmatch(shown[field]), shown[field]
    with Client(service.url, service.token) as api:
        names = {cvm.name for cvm in api.iter_cvms(name="example")}
    assert names == {"example-cvm", "example-cli"}


@pytest.mark.slow
def test_the_sdk_snippet_runs_as_written(service: Service) -> None:
    snippet = _block("python", "from prism_backends.client import Client")
    agent_started = threading.Event()

    def start_its_agent() -> None:
        # What the reader does meanwhile: run the new CVM's agent.
        with Client(service.url, service.token) as api:
            for _ in range(int(START_TIMEOUT * 10)):
                made = list(api.iter_cvms(name="web-3"))
                if made:
                    service.start_agent("agent-web-3", api.agent_config(made[0].id).model_dump())
                    agent_started.set()
                    return
                threading.Event().wait(0.1)

    helper = threading.Thread(target=start_its_agent, daemon=True)
    helper.start()
    done = _shell(service, f"{shlex.quote(sys.executable)} -c {shlex.quote(snippet)}")
    helper.join(timeout=DIAL_TIMEOUT)
    assert agent_started.is_set()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "provisioned running"


def test_the_profile_file_shown_is_read_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(_block("toml", "[profiles."), encoding="utf-8")
    profiles.chmod(0o600)
    monkeypatch.setenv(connection.PROFILES_ENV, str(profiles))
    chosen = connection.resolve(None, None, None, None)
    assert chosen.url == "http://127.0.0.1:9011/backends"
    assert chosen.token == "eyJ..."
    assert chosen.domain == "c1adf32-3dac-4aad-bead-ae96fe071239"
    other = connection.resolve(None, None, "acme", "staging")
    assert other.url == "https://staging.example.com/backends"
