from __future__ import annotations

from pathlib import Path

import pytest

from prism_backends.agent import config


def write_environment(tmp_path: Path, **overrides: str) -> Path:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("cert", "key", "ca"):
        (certs / f"{name}.pem").write_text(f"-----{name}-----\n")
    variables = {
        "AGENT_CVM_GRPC_URL": "10.0.2.2:7018",
        "AGENT_CVM_ID": "cvm-1",
        "AGENT_LOG_LEVEL": "debug",
        "AGENT_CVM_GRPC_CLIENT_CERT": str(certs / "cert.pem"),
        "AGENT_CVM_GRPC_CLIENT_KEY": str(certs / "key.pem"),
        "AGENT_CVM_GRPC_SERVER_CA_CERTS": str(certs / "ca.pem"),
        **overrides,
    }
    path = tmp_path / "environment"
    path.write_text(
        "# Cocos' agent environment\n" + "".join(f"{k}={v}\n" for k, v in variables.items())
    )
    return path


def test_cocos_environment_file_gives_the_agent_its_settings(tmp_path: Path) -> None:
    settings = config.load_environment(write_environment(tmp_path))
    assert settings.cvm_id == "cvm-1"
    assert settings.agents_address == "10.0.2.2:7018"
    assert settings.server_name == "10.0.2.2"
    assert settings.client_cert == "-----cert-----\n"
    assert settings.client_key == "-----key-----\n"
    assert settings.ca_cert == "-----ca-----\n"
    assert settings.log_level == "debug"


def test_missing_variables_are_named(tmp_path: Path) -> None:
    path = write_environment(tmp_path, AGENT_CVM_ID="")
    with pytest.raises(config.AgentConfigError, match="missing AGENT_CVM_ID"):
        config.load_environment(path)


def test_unreadable_certificate_is_named(tmp_path: Path) -> None:
    path = write_environment(tmp_path, AGENT_CVM_GRPC_CLIENT_KEY="/nonexistent/key.pem")
    with pytest.raises(config.AgentConfigError, match="AGENT_CVM_GRPC_CLIENT_KEY"):
        config.load_environment(path)


def test_quoted_values_are_read_as_systemd_does() -> None:
    assert config.parse_environment("A=\"x y\"\nB='z'\n# c\nD=\n") == {
        "A": "x y",
        "B": "z",
        "D": "",
    }


def test_json_configuration_is_checked_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text('{"cvm_id": "x", "log_level": "loud"}')
    with pytest.raises(config.AgentConfigError) as raised:
        config.load(path)
    assert "agents_address" in str(raised.value)
    assert "log_level" in str(raised.value)
    path.write_text("[]")
    with pytest.raises(config.AgentConfigError, match="JSON object"):
        config.load(path)
