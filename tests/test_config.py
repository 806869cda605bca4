"""Settings: flags beat PRISM_BACKENDS_* environment, which beats the config file,
which beats the defaults; bad values are refused with the setting named."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from prism_backends.config import DEFAULT_DATA_DIR, Settings, load_settings


@pytest.fixture(autouse=True)
def _no_prism_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets itself may reach the settings."""
    for name in list(os.environ):
        if name.startswith("PRISM_BACKENDS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def _write(text: str) -> Path:
        path = tmp_path / "prism-backends.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return _write


# --- defaults ----------------------------------------------------------------


def test_defaults_when_nothing_is_given() -> None:
    settings = load_settings()

    assert settings.host == "127.0.0.1"
    assert settings.port == 9011
    assert settings.base_path == "/backends"
    assert settings.log_level == "info"
    assert settings.data_dir == DEFAULT_DATA_DIR == Path(".prism-backends")
    assert settings.worker_concurrency == 4
    assert settings.jwt_algorithms == ["EdDSA"]
    assert settings.jwt_issuer == "prism-backends"
    assert settings.embedded_issuer is True


def test_default_store_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")

    expected = (tmp_path / "data" / "prism-backends.db").resolve()
    assert settings.effective_database_url == f"sqlite:///{expected}"


def test_database_url_replaces_the_embedded_store() -> None:
    url = "postgresql+psycopg://prism@db.example/prism"
    assert load_settings(database_url=url).effective_database_url == url


def test_providers_dir_defaults_to_data_dir_providers_only_when_it_exists(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert load_settings(data_dir=data_dir).effective_providers_dir is None

    (data_dir / "providers").mkdir()
    assert load_settings(data_dir=data_dir).effective_providers_dir == data_dir / "providers"


# --- precedence ----------------------------------------------------------------

# setting, default, config-file TOML value, environment value, flag value, and the
# parsed value each of the last three should give.
PRECEDENCE_CASES: list[tuple[str, Any, str, str, Any, Any, Any, Any]] = [
    ("port", 9011, "8001", "8002", 8003, 8001, 8002, 8003),
    ("host", "127.0.0.1", '"10.0.0.1"', "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.3"),
    ("log_level", "info", '"debug"', "warning", "error", "debug", "warning", "error"),
    ("worker_concurrency", 4, "8", "16", 32, 8, 16, 32),
    (
        "data_dir",
        Path(".prism-backends"),
        '"/srv/from-file"',
        "/srv/from-env",
        Path("/srv/from-flag"),
        Path("/srv/from-file"),
        Path("/srv/from-env"),
        Path("/srv/from-flag"),
    ),
    (
        "jwt_algorithms",
        ["EdDSA"],
        '["RS256"]',
        '["ES256"]',
        ["PS256"],
        ["RS256"],
        ["ES256"],
        ["PS256"],
    ),
    (
        "base_path",
        "/backends",
        '"/from-file/"',
        "from-env",
        "/from-flag",
        "/from-file",
        "/from-env",
        "/from-flag",
    ),
]


@pytest.mark.parametrize(
    ("field", "default", "file_toml", "env_raw", "flag", "from_file", "from_env", "from_flag"),
    PRECEDENCE_CASES,
    ids=[case[0] for case in PRECEDENCE_CASES],
)
def test_flag_beats_env_beats_config_file_beats_default(
    monkeypatch: pytest.MonkeyPatch,
    write_config: WriteConfig,
    field: str,
    default: Any,
    file_toml: str,
    env_raw: str,
    flag: Any,
    from_file: Any,
    from_env: Any,
    from_flag: Any,
) -> None:
    assert getattr(load_settings(), field) == default

    config = write_config(f"{field} = {file_toml}\n")
    assert getattr(load_settings(config), field) == from_file

    monkeypatch.setenv(f"PRISM_BACKENDS_{field.upper()}", env_raw)
    assert getattr(load_settings(config), field) == from_env

    assert getattr(load_settings(config, **{field: flag}), field) == from_flag


def test_each_source_only_overrides_what_it_sets(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    config = write_config('port = 8001\nlog_level = "debug"\nhost = "10.0.0.1"\n')
    monkeypatch.setenv("PRISM_BACKENDS_LOG_LEVEL", "warning")

    settings = load_settings(config, host="10.9.9.9")

    assert settings.port == 8001  # only the file says
    assert settings.log_level == "warning"  # env over file
    assert settings.host == "10.9.9.9"  # flag over file
    assert settings.worker_concurrency == 4  # nobody says


def test_a_flag_of_none_means_not_given(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    config = write_config("port = 8001\n")
    assert load_settings(config, port=None).port == 8001
    monkeypatch.setenv("PRISM_BACKENDS_PORT", "8002")
    assert load_settings(config, port=None).port == 8002


def test_config_file_named_by_environment(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig, tmp_path: Path
) -> None:
    monkeypatch.setenv("PRISM_BACKENDS_CONFIG", str(write_config("port = 8001\n")))
    assert load_settings().port == 8001

    explicit = tmp_path / "explicit.toml"
    explicit.write_text("port = 8005\n", encoding="utf-8")
    assert load_settings(explicit).port == 8005


def test_config_file_does_not_leak_into_later_settings(write_config: WriteConfig) -> None:
    assert load_settings(write_config("port = 8001\n")).port == 8001
    assert load_settings().port == 9011
    assert Settings().port == 9011


# --- bad values ----------------------------------------------------------------


def _error_fields(exc: ValidationError) -> set[str]:
    return {str(error["loc"][0]) for error in exc.errors() if error["loc"]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", 65536),
        ("worker_concurrency", 0),
        ("worker_concurrency", 257),
        ("lease_seconds", 0),
        ("poll_seconds", -1.0),
        ("stats_retention_days", 0),
    ],
)
def test_out_of_range_flag_is_refused_naming_the_setting(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(**{field: value})
    assert _error_fields(caught.value) == {field}


def test_bad_environment_value_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRISM_BACKENDS_PORT", "nine thousand")
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert _error_fields(caught.value) == {"port"}


def test_bad_config_file_value_is_refused_naming_the_setting(write_config: WriteConfig) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(write_config("worker_concurrency = 0\n"))
    assert _error_fields(caught.value) == {"worker_concurrency"}


def test_unknown_config_file_key_is_refused_naming_it(write_config: WriteConfig) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(write_config("prot = 9000\n"))
    assert _error_fields(caught.value) == {"prot"}


def test_unparseable_list_in_environment_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRISM_BACKENDS_JWT_ALGORITHMS", "EdDSA")
    with pytest.raises(ValueError, match="jwt_algorithms"):
        load_settings()


@pytest.mark.parametrize("level", ["loud", "verbose"])
def test_unknown_log_level_is_refused(level: str) -> None:
    # The help promises "debug, info, warning or error"; anything else would
    # only crash later, inside logging.basicConfig, with a traceback.
    with pytest.raises(ValidationError) as caught:
        load_settings(log_level=level)
    assert _error_fields(caught.value) == {"log_level"}


# --- base_path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("/backends", "/backends"),
        ("/backends/", "/backends"),
        ("backends", "/backends"),
        ("backends/", "/backends"),
        ("//backends//", "/backends"),
        ("/api/v1/", "/api/v1"),
        ("/", ""),
        ("", ""),
    ],
)
def test_base_path_is_normalised(raw: str, normalised: str) -> None:
    assert load_settings(base_path=raw).base_path == normalised


def test_base_path_from_env_and_file_is_normalised_too(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    config = write_config('base_path = "prism/"\n')
    assert load_settings(config).base_path == "/prism"
    monkeypatch.setenv("PRISM_BACKENDS_BASE_PATH", "/")
    assert load_settings(config).base_path == ""
