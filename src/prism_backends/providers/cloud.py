"""What the cloud drivers share and no SDK needs: the machine's name and tags
derived from the CVM, and the cloud-init user data that starts its agent.

The user data is laid out as Prism's deployment does it: the agent's
certificate, key and the agents CA in ``/etc/cocos/certs``, Cocos'
``/etc/cocos/environment``, and a systemd service running the agent. The
agent installed is our reference agent by default (its modules travel inside
the user data, gRPC comes from PyPI on the machine); ``agent = "cocos"``
installs Cocos' agent binary from a URL instead.
"""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism_backends import agent
from prism_backends.providers.base import MachineRequest, TerminalProviderError
from prism_backends.providers.config import ProviderConfigError

# Azure refuses more; the others allow at least this much.
MAX_USER_DATA_BYTES = 64 * 1024
NAME_PREFIX = "prism-"
TAG_CVM = "prism-backends-cvm"
TAG_DOMAIN = "prism-backends-domain"
TAG_MARK = "prism-backends-mark"
ENVIRONMENT_FILE = "/etc/cocos/environment"


@dataclass(frozen=True, slots=True)
class AgentChoice:
    """Which agent the machine runs: ``reference`` (ours) or ``cocos`` (its binary)."""

    kind: str = "reference"
    cocos_agent_url: str = ""


def agent_choice(settings: Mapping[str, Any], source: str) -> AgentChoice:
    """The ``agent`` and ``cocos_agent_url`` keys of a provider's ``[config]``."""
    kind = settings.get("agent", "reference")
    if kind not in ("reference", "cocos"):
        raise ProviderConfigError(f"{source}: [config] agent must be reference or cocos")
    url = settings.get("cocos_agent_url", "")
    if kind == "cocos" and not (isinstance(url, str) and url.startswith("https://")):
        raise ProviderConfigError(
            f'{source}: [config] agent = "cocos" needs cocos_agent_url (https)'
        )
    return AgentChoice(kind=str(kind), cocos_agent_url=str(url))


def required_setting(
    settings: Mapping[str, Any], key: str, source: str, *, default: str = "", hint: str = ""
) -> str:
    """A non-empty string from a provider's ``[config]``, or an error naming the key."""
    value = settings.get(key, default) or default
    if not isinstance(value, str) or not value:
        raise ProviderConfigError(f"{source}: [config] {key} is required{hint}")
    return value


def operation_wait_seconds(settings: Mapping[str, Any], source: str, default: float) -> float:
    """How long one lifecycle step waits on a cloud's long-running operation."""
    wait = settings.get("operation_wait_seconds", default)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or wait < 0:
        raise ProviderConfigError(f"{source}: [config] operation_wait_seconds must be >= 0")
    return float(wait)


def machine_name(cvm_id: str) -> str:
    """A name every cloud accepts (lower case, digits, hyphens, at most 63)."""
    return f"{NAME_PREFIX}{cvm_id}".lower()[:63]


def tags(request: MachineRequest, mark: str) -> dict[str, str]:
    """The labels that find a machine again: its CVM, domain and deployment."""
    labels = {TAG_CVM: request.cvm_id, TAG_DOMAIN: request.domain_id}
    if mark:
        labels[TAG_MARK] = mark
    return labels


def user_data(request: MachineRequest, choice: AgentChoice = AgentChoice()) -> str:
    """Cloud-init that writes the agent's identity and starts it; raises a
    terminal error past the size clouds accept."""
    agent = request.agent
    if agent is None:
        raise TerminalProviderError("the agent's credentials are missing from the request")
    environment = "".join(
        f"{key}={value}\n"
        for key, value in (
            ("AGENT_CVM_GRPC_URL", agent.server_url),
            ("AGENT_CVM_ID", request.cvm_id),
            ("AGENT_LOG_LEVEL", request.agent_log_level.value),
            ("AGENT_CVM_GRPC_CLIENT_CERT", "/etc/cocos/certs/cert.pem"),
            ("AGENT_CVM_GRPC_CLIENT_KEY", "/etc/cocos/certs/key.pem"),
            ("AGENT_CVM_GRPC_SERVER_CA_CERTS", "/etc/cocos/certs/ca.pem"),
        )
    )
    files = [
        _file("/etc/cocos/certs/cert.pem", agent.client_cert_pem, "0644"),
        _file("/etc/cocos/certs/key.pem", agent.client_key_pem, "0600"),
        _file("/etc/cocos/certs/ca.pem", agent.ca_cert_pem, "0644"),
        _file(ENVIRONMENT_FILE, environment.encode(), "0600"),
        _file("/etc/systemd/system/cocos-agent.service", _unit(choice).encode(), "0644"),
    ]
    if choice.kind == "reference":
        files.append(_file("/opt/prism-agent/agent.tar.gz", _agent_archive(), "0644"))
    document = "#cloud-config\nwrite_files:\n" + "".join(files) + _commands(choice)
    size = len(document.encode())
    if size > MAX_USER_DATA_BYTES:
        raise TerminalProviderError(
            f"the user data is {size} bytes; clouds accept at most {MAX_USER_DATA_BYTES}"
        )
    return document


def _file(path: str, content: bytes, mode: str) -> str:
    encoded = base64.b64encode(content).decode()
    return (
        f"  - path: {path}\n    permissions: '{mode}'\n    encoding: b64\n    content: {encoded}\n"
    )


def _unit(choice: AgentChoice) -> str:
    if choice.kind == "cocos":
        start = "/usr/local/bin/cocos-agent"
    else:
        start = "/opt/prism-agent/venv/bin/python -m prism_backends.agent --env " + ENVIRONMENT_FILE
    return (
        "[Unit]\nDescription=CVM agent\nAfter=network-online.target\n"
        "Wants=network-online.target\n\n"
        f"[Service]\nEnvironmentFile={ENVIRONMENT_FILE}\nExecStart={start}\n"
        "Restart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def _commands(choice: AgentChoice) -> str:
    if choice.kind == "cocos":
        install = [
            f"curl -fsSL -o /usr/local/bin/cocos-agent {choice.cocos_agent_url}",
            "chmod 0755 /usr/local/bin/cocos-agent",
        ]
    else:
        install = [
            "python3 -m venv /opt/prism-agent/venv",
            "/opt/prism-agent/venv/bin/pip install --quiet grpcio protobuf",
            "tar -xzf /opt/prism-agent/agent.tar.gz -C "
            "/opt/prism-agent/venv/lib/python3*/site-packages",
        ]
    steps = [*install, "systemctl daemon-reload", "systemctl enable --now cocos-agent"]
    return "runcmd:\n" + "".join(f"  - [sh, -c, {_quoted(step)}]\n" for step in steps)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _agent_archive() -> bytes:
    """The reference agent's modules, reproducibly (fixed times, sorted)."""
    root = Path(__file__).resolve().parents[2]
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w") as archive,
    ):
        for relative in agent.MODULES:
            data = (root / relative).read_bytes()
            info = tarfile.TarInfo(relative)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
