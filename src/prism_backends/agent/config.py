"""The agent's configuration, from either of two sources:

- the JSON of ``GET .../agent_config``, saved as is (an external CVM);
- Cocos' environment file (``/etc/cocos/environment`` in a guest the host
  manager launched): ``AGENT_CVM_GRPC_URL``, ``AGENT_CVM_ID``,
  ``AGENT_LOG_LEVEL`` and the paths of the client certificate, its key and the
  server CA.

Plain dataclasses and the standard library only: this module runs inside
guest images that carry nothing but the agent and gRPC.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_LEVELS = ("debug", "info", "warn", "warning", "error")


class AgentConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AgentSettings:
    cvm_id: str
    agents_address: str
    server_name: str
    ca_cert: str
    client_cert: str
    client_key: str
    log_level: str = "info"


_REQUIRED = ("cvm_id", "agents_address", "server_name", "ca_cert", "client_cert", "client_key")


def load(path: Path) -> AgentSettings:
    """Settings from the JSON of ``GET .../agent_config``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise AgentConfigError(f"{path}: expected a JSON object")
    return _settings(document, str(path))


def load_environment(path: Path) -> AgentSettings:
    """Settings from Cocos' environment file (``KEY=value`` lines)."""
    try:
        variables = parse_environment(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentConfigError(f"cannot read {path}: {exc.strerror}") from None
    missing = [key for key in _ENVIRONMENT_KEYS if not variables.get(key)]
    if missing:
        raise AgentConfigError(f"{path}: missing {', '.join(missing)}")
    address = variables["AGENT_CVM_GRPC_URL"]
    files = {}
    for field, key in _ENVIRONMENT_FILES.items():
        try:
            files[field] = Path(variables[key]).read_text(encoding="utf-8")
        except OSError as exc:
            raise AgentConfigError(f"{key}={variables[key]}: {exc.strerror}") from None
    return _settings(
        {
            "cvm_id": variables["AGENT_CVM_ID"],
            "agents_address": address,
            "server_name": address.rsplit(":", 1)[0].strip("[]"),
            "log_level": variables.get("AGENT_LOG_LEVEL", "info"),
            **files,
        },
        str(path),
    )


_ENVIRONMENT_FILES = {
    "client_cert": "AGENT_CVM_GRPC_CLIENT_CERT",
    "client_key": "AGENT_CVM_GRPC_CLIENT_KEY",
    "ca_cert": "AGENT_CVM_GRPC_SERVER_CA_CERTS",
}
_ENVIRONMENT_KEYS = ("AGENT_CVM_GRPC_URL", "AGENT_CVM_ID", *_ENVIRONMENT_FILES.values())


def parse_environment(text: str) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile reads them (quotes allowed)."""
    variables: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value.strip() else [""]
        variables[key.strip()] = parts[0] if len(parts) == 1 else " ".join(parts)
    return variables


def _settings(document: dict[str, Any], source: str) -> AgentSettings:
    problems = [
        f"{key}: a non-empty string is required"
        for key in _REQUIRED
        if not isinstance(document.get(key), str) or not document[key]
    ]
    level = document.get("log_level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        problems.append(f"log_level: one of {', '.join(LOG_LEVELS)}")
    if problems:
        raise AgentConfigError(f"{source}: {'; '.join(problems)}")
    return AgentSettings(**{key: document[key] for key in _REQUIRED}, log_level=str(level).lower())
