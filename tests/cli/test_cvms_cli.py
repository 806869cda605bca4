"""``prism-backends cvms`` against a real ``serve``: in-process through typer's
CliRunner, and as a real subprocess where a terminal-less process, a wait or a
follow is what is tested."""

from __future__ import annotations

import json
import os
import pty
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from prism_backends.cli import main as cli_main
from prism_backends.client import Client
from tests.client.service import POLICY, Service, service
from tests.served import DIAL_TIMEOUT, DOMAIN, HEARTBEAT, SLACK, START_TIMEOUT, free_port

pytestmark = pytest.mark.slow
__all__ = ["service"]

ESC = "\x1b"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _env(service: Service, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
    env.update(
        PRISM_BACKENDS_URL=service.url,
        PRISM_BACKENDS_TOKEN=service.token,
        PRISM_BACKENDS_PROFILES=str(tmp / "no-profiles.toml"),
    )
    env.update(extra)
    return env


def invoke(service: Service, tmp: Path, *args: str, **env: str) -> Result:
    """Run ``prism-backends cvms ...`` in this process."""
    full = _env(service, tmp, **env)
    cleared: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("PRISM_BACKENDS_")
    }
    result = CliRunner().invoke(cli_main.app, ["cvms", *args], env={**cleared, **full})
    assert ESC not in result.stdout + result.stderr, "rich control codes off a terminal"
    assert "Traceback" not in result.stdout + result.stderr
    return result


class Commands:
    """``prism-backends cvms ...`` as processes of their own (no terminal); each
    one's output in files, and every one stopped at the end of the test."""

    def __init__(self, service: Service, tmp: Path) -> None:
        self.service, self.tmp = service, tmp
        self.started: list[tuple[subprocess.Popen[bytes], list[IO[bytes]]]] = []

    def spawn(self, label: str, *args: str) -> subprocess.Popen[bytes]:
        files: list[IO[bytes]] = [
            (self.tmp / f"{label}.out").open("wb"),
            (self.tmp / f"{label}.err").open("wb"),
        ]
        process = subprocess.Popen(
            [sys.executable, "-m", "prism_backends", "cvms", *args],
            env=_env(self.service, self.tmp),
            stdout=files[0],
            stderr=files[1],
            stdin=subprocess.DEVNULL,
            # Ctrl-C as a terminal sends it: a runner that starts the tests in the
            # background leaves SIGINT ignored, and the child would inherit that.
            preexec_fn=_default_sigint,
        )
        self.started.append((process, files))
        return process

    def stop(self) -> None:
        for process, files in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            for handle in files:
                handle.close()


@pytest.fixture
def commands(service: Service, tmp_path: Path) -> Iterator[Commands]:
    started = Commands(service, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def outputs(tmp: Path, label: str) -> tuple[str, str]:
    return (tmp / f"{label}.out").read_text(), (tmp / f"{label}.err").read_text()


def poll_until(what: str, check: Callable[[], Any], timeout: float, explain: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:.0f} s {explain}")
        time.sleep(0.1)
    return found


def test_create_wait_stats_events_policy_and_delete_with_a_real_agent(
    service: Service, tmp_path: Path, commands: Commands
) -> None:
    name = _name("cli")
    waiting = commands.spawn(
        "create", "create", name, "--provider", "external", "--vcpus", "2",
        "--platform", "sev-snp", "--wait", "--timeout", str(START_TIMEOUT + DIAL_TIMEOUT),
        "--poll", "0.2",
    )  # fmt: skip
    with Client(service.url, service.token) as api:
        found = poll_until(
            "created", lambda: api.list_cvms(name=name).cvms, START_TIMEOUT, "by create --wait"
        )
        cvm_id = found[0].id
        poll_until("waiting", lambda: "status starting" in outputs(tmp_path, "create")[1], 30)
        assert waiting.poll() is None, outputs(tmp_path, "create")

        # The agent's configuration, written owner-only, then the agent itself.
        config_file = tmp_path / "agent.json"
        result = invoke(service, tmp_path, "agent-config", cvm_id, "-o", str(config_file))
        assert result.exit_code == 0, result.stderr
        assert "private key" in result.stderr
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
        config = json.loads(config_file.read_text())
        assert config["cvm_id"] == cvm_id
        service.start_agent("agent-cli", config)

        assert waiting.wait(timeout=START_TIMEOUT + DIAL_TIMEOUT) == 0, outputs(tmp_path, "create")
        out, err = outputs(tmp_path, "create")
        assert f"created {cvm_id}" in err
        assert "state provisioned, status starting" in err
        assert "state provisioned, status running" in err
        assert err.index("status starting") < err.index("status running")
        assert "running" in out and cvm_id in out
        assert ESC not in out + err

        # A few samples up, as a bar.
        poll_until("two samples", lambda: api.statistics(cvm_id).total >= 2, 10 * HEARTBEAT)
        result = invoke(service, tmp_path, "stats", cvm_id)
        assert result.exit_code == 0, result.stderr
        assert "█" in result.stdout and "day (UTC)" in result.stdout
        assert "% of" in result.stdout and "attestation: 0 verified" in result.stdout
        result = invoke(service, tmp_path, "stats", cvm_id, "--output", "json", "--limit", "5")
        page = json.loads(result.stdout)
        assert set(page) == {"cvm_stats", "attestation", "total", "uptime"}
        assert len(page["cvm_stats"]) <= 5

        # Events: a table, the API's JSON, and new ones followed as they come.
        result = invoke(service, tmp_path, "events", cvm_id)
        assert result.exit_code == 0 and "connected" in result.stdout
        result = invoke(service, tmp_path, "events", cvm_id, "--output", "json")
        assert json.loads(result.stdout) == _get(
            service, f"/{DOMAIN}/cvms/{cvm_id}/events?limit=20"
        )
        following = commands.spawn(
            "follow", "events", cvm_id, "--follow", "--poll", "0.3",
            "--output", "json",
        )  # fmt: skip
        poll_until("the first events", lambda: outputs(tmp_path, "follow")[0], 30)

        # The policy, to stdout and to a file.
        result = invoke(service, tmp_path, "policy", cvm_id)
        assert result.exit_code == 0 and result.stdout_bytes.rstrip(b"\n") == POLICY
        policy_file = tmp_path / "policy.json"
        result = invoke(service, tmp_path, "policy", cvm_id, "-o", str(policy_file))
        assert result.exit_code == 0 and policy_file.read_bytes() == POLICY

        # The agent gone: the follower sees it disconnect.
        service.processes.kill("agent-cli")

        def disconnected() -> bool:
            lines = outputs(tmp_path, "follow")[0].splitlines()
            return "disconnected" in [json.loads(line)["kind"] for line in lines]

        poll_until("disconnected followed", disconnected, 2 * HEARTBEAT + 4 * SLACK)
        following.send_signal(signal.SIGINT)
        assert following.wait(timeout=30) == 0, outputs(tmp_path, "follow")
        ids = [int(json.loads(line)["id"]) for line in outputs(tmp_path, "follow")[0].splitlines()]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), "followed out of order or twice"

        result = invoke(service, tmp_path, "delete", cvm_id)
        assert result.exit_code == 0, result.stderr

    result = invoke(service, tmp_path, "show", cvm_id)
    assert result.exit_code == 1 and "not_found" in result.stderr


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _get(service: Service, path: str) -> Any:
    reply = httpx.get(
        service.url + path, headers={"Authorization": f"Bearer {service.token}"}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_list_as_a_table_and_as_the_apis_json(service: Service, tmp_path: Path) -> None:
    name = _name("listed")
    for platform in ("sev-snp", "tdx"):
        result = invoke(
            service, tmp_path, "create", f"{name}-{platform}", "--provider", "external",
            "--vcpus", "4", "--platform", platform, "--output", "json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["cc_platform"] == platform
    result = invoke(service, tmp_path, "list", "--name", name)
    assert result.exit_code == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == [
        "id", "name", "provider", "platform", "vcpus", "state", "status", "monthly", "cost",
        "created",
    ]  # fmt: skip
    rows = [line.split() for line in result.stdout.splitlines()[1:3]]
    assert {row[1] for row in rows} == {f"{name}-sev-snp", f"{name}-tdx"}
    assert all(
        row[2:8] == ["external", row[3], "4", "provisioned", "starting", "$0.00"] for row in rows
    )
    assert "1-2 of 2" in result.stdout

    result = invoke(
        service, tmp_path, "list", "--name", name, "--platform", "tdx", "--output", "json"
    )
    assert json.loads(result.stdout) == _get(
        service, f"/{DOMAIN}/cvms?name={name}&cc_platform=tdx&limit=20&offset=0"
    )


def test_failures_exit_with_their_code_and_one_line(service: Service, tmp_path: Path) -> None:
    unknown = str(uuid.uuid4())
    result = invoke(service, tmp_path, "show", unknown)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "(404 not_found)" in result.stderr

    result = invoke(service, tmp_path, "list", PRISM_BACKENDS_TOKEN=service.token + "x",
                    PRISM_BACKENDS_DOMAIN=DOMAIN)  # fmt: skip
    assert result.exit_code == 3 and "401 unauthorized" in result.stderr

    made = invoke(
        service, tmp_path, "create", _name("member"), "--provider", "external", "--vcpus", "2",
        "--output", "json",
    )  # fmt: skip
    cvm_id = json.loads(made.stdout)["id"]
    result = invoke(service, tmp_path, "agent-config", cvm_id,
                    PRISM_BACKENDS_TOKEN=service.member_token)  # fmt: skip
    assert result.exit_code == 3 and "403 forbidden" in result.stderr

    result = invoke(service, tmp_path, "policy", cvm_id, "--format", "yaml")
    assert result.exit_code == 2  # typer's usage error
    result = invoke(service, tmp_path, "create", "x", "--vcpus", "2")  # no --provider
    assert result.exit_code == 2
    result = invoke(service, tmp_path, "list", PRISM_BACKENDS_TOKEN="")
    assert result.exit_code == 2 and "no token" in result.stderr

    result = invoke(service, tmp_path, "create", "bad", "--provider", "external", "--vcpus", "0")
    assert result.exit_code == 1 and "400 bad_request" in result.stderr

    nowhere = f"http://127.0.0.1:{free_port()}/backends"
    result = invoke(service, tmp_path, "list", PRISM_BACKENDS_URL=nowhere)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot reach the service at {nowhere}")


def test_create_wait_gives_up_after_the_timeout(service: Service, tmp_path: Path) -> None:
    result = invoke(
        service, tmp_path, "create", _name("nobody"), "--provider", "external", "--vcpus", "2",
        "--wait", "--timeout", "1", "--poll", "0.2",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not running after 1 s (state provisioned, status starting)" in result.stderr


def test_a_profile_and_the_precedence_of_flags_and_environment(
    service: Service, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        f'default = "here"\n[profiles.here]\nurl = "{service.url}"\ntoken = "{service.token}"\n'
        f'[profiles.elsewhere]\nurl = "http://127.0.0.1:{free_port()}/backends"\n'
        f'token = "{service.token}"\n'
    )
    profiles.chmod(0o600)
    env = {"PRISM_BACKENDS_PROFILES": str(profiles), "PRISM_BACKENDS_URL": "",
           "PRISM_BACKENDS_TOKEN": ""}  # fmt: skip
    result = invoke(service, tmp_path, "list", "--output", "json", **env)
    assert result.exit_code == 0, result.stderr  # the default profile, its token's domain
    assert result.stderr == ""
    result = invoke(service, tmp_path, "list", "--profile", "elsewhere", **env)
    assert result.exit_code == 1 and "cannot reach" in result.stderr
    result = invoke(
        service, tmp_path, "list", "--profile", "elsewhere", "--url", service.url, **env
    )
    assert result.exit_code == 0, result.stderr  # the flag beats the profile
    result = invoke(service, tmp_path, "list", **{**env, "PRISM_BACKENDS_TOKEN": "nonsense"})
    assert result.exit_code == 2 and "no domain" in result.stderr  # env beats the profile
    result = invoke(service, tmp_path, "list", "--profile", "missing", **env)
    assert result.exit_code == 2 and "no profile 'missing'" in result.stderr


def test_on_a_terminal_the_wait_is_a_live_status(service: Service, tmp_path: Path) -> None:
    """The other side of 'no control codes off a terminal': on one, rich draws."""
    controller, terminal = pty.openpty()
    args = ["create", _name("tty"), "--provider", "external", "--vcpus", "2", "--wait",
            "--timeout", "1", "--poll", "0.2"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "prism_backends", "cvms", *args],
        env={**_env(service, tmp_path), "TERM": "xterm-256color", "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(timeout=60) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        os.close(controller)
    shown = seen.decode(errors="replace")
    assert ESC in shown  # the spinner's redraws
    assert "state provisioned, status starting" in shown
    assert "not running after 1 s" in shown


def test_a_reader_that_went_away_ends_the_command_quietly(service: Service, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "prism_backends", "cvms", "list", "--output", "json"],
        env=_env(service, tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command writes anything
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 0, stderr
    assert stderr == ""


def test_certificates_listed_issued_renewed_and_revoked(service: Service, tmp_path: Path) -> None:
    created = invoke(
        service, tmp_path, "create", _name("certs"), "--provider", "external", "--vcpus", "2",
        "--output", "json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    cvm_id = json.loads(created.stdout)["id"]

    def listed() -> list[dict[str, Any]]:
        result = invoke(service, tmp_path, "certificates", "list", cvm_id, "--output", "json")
        assert result.exit_code == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        assert document == _get(service, f"/{DOMAIN}/cvms/{cvm_id}/certificates")
        return list(document["certificates"])

    [first] = listed()
    assert first["state"] == "active"

    issued = invoke(service, tmp_path, "certificates", "issue", cvm_id)
    assert issued.exit_code == 0, issued.stderr
    assert issued.stdout.split()[:2] == ["serial", "state"]
    newest = listed()[0]
    assert newest["state"] == "pending" and newest["serial"] in issued.stdout
    assert f"issued {newest['serial']}" in issued.stderr

    renewed = invoke(service, tmp_path, "certificates", "renew", cvm_id, first["serial"])
    assert renewed.exit_code == 0, renewed.stderr
    states = {each["serial"]: each["state"] for each in listed()}
    assert len(states) == 3 and states[first["serial"]] == "active", states

    revoked = invoke(
        service, tmp_path, "certificates", "revoke", cvm_id, newest["serial"], "--output", "json"
    )
    assert revoked.exit_code == 0, revoked.stderr
    assert json.loads(revoked.stdout)["state"] == "revoked"
    again = invoke(service, tmp_path, "certificates", "revoke", cvm_id, newest["serial"])
    assert again.exit_code == 1 and again.stderr.startswith("error: "), again.stderr
    assert "already revoked" in again.stderr
    unknown = invoke(service, tmp_path, "certificates", "renew", cvm_id, "abcdef")
    assert unknown.exit_code == 1, unknown.stderr
