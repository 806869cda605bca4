"""The agent's configuration: the JSON of ``GET .../agent_config``, saved as is."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    cvm_id: str
    agents_address: str
    server_name: str
    ca_cert: str
    client_cert: str
    client_key: str
    log_level: str = "info"


class AgentConfigError(ValueError):
    pass


def load(path: Path) -> AgentSettings:
    try:
        return AgentSettings.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise AgentConfigError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise AgentConfigError(f"{path} is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise AgentConfigError(f"{path}: {problems}") from None
