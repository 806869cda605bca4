"""Settings: command-line flags, then ``PRISM_BACKENDS_*`` environment, then a
TOML config file, then defaults (in that order of precedence)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "PRISM_BACKENDS_"
DEFAULT_DATA_DIR = Path(".prism-backends")
SLIRP_HOST_ADDRESS = "10.0.2.2"


class LayeredSettings(BaseSettings):
    """Flags (init arguments), then the environment, then a TOML file: the
    precedence every command's settings share. The file is set per load."""

    config_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.config_file))
        return tuple(sources)


LayeredT = TypeVar("LayeredT", bound=LayeredSettings)


def load_layered(kind: type[LayeredT], config_file: Path | None, **overrides: Any) -> LayeredT:
    """``kind`` from flags (None means 'not given'), environment and ``config_file``."""
    configured = type(f"Configured{kind.__name__}", (kind,), {"config_file": config_file})
    given = {key: value for key, value in overrides.items() if value is not None}
    return configured(**given)  # type: ignore[no-any-return]


class Settings(LayeredSettings):
    """Everything the service can be told. Each field's description is its help text."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Directory for the embedded SQLite database and the signing keys.",
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_given(cls, value: Any) -> Any:
        # Path("") is the current directory: an empty value is a mistake, not a choice.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty (give a directory path)")
        return value

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store, e.g. postgresql+psycopg://host/db. "
        "Default: SQLite at DATA_DIR/prism-backends.db.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(9011, ge=1, le=65535, description="Port of the HTTP API.")
    base_path: str = Field("/backends", description="Path prefix every route is served under.")
    providers_dir: Path | None = Field(
        None,
        description="Directory of provider TOML files, one per provider. "
        "Default: DATA_DIR/providers if it exists; otherwise only 'external' is enabled.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text, or json: one object per line (time, level, logger, message, "
        "request_id, domain, cvm_id where known).",
    )

    # Metrics.
    metrics_enabled: bool = Field(
        True, description="Serve Prometheus metrics at /metrics and BASE_PATH/metrics."
    )
    metrics_dir: Path | None = Field(
        None,
        description="Where processes run apart (api, worker, agents) on one host share their "
        "metrics, so that any one's /metrics shows all. Default: DATA_DIR/metrics.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="worker and agents: also serve /metrics on this port (the API serves "
        "them on its own).",
    )
    metrics_host: str = Field("127.0.0.1", description="Where metrics_port listens.")

    # Authentication.
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["EdDSA"],
        description="Token signature algorithms accepted (pinned; the token header is ignored).",
    )
    jwks_file: Path | None = Field(None, description="Trust an external issuer's JWKS file.")
    jwks_url: str | None = Field(None, description="Trust an external issuer's JWKS URL.")
    jwt_issuer: str = Field(
        "prism-backends", description="Expected 'iss' of tokens (and the embedded issuer's)."
    )
    jwt_audience: str = Field(
        "prism-backends",
        min_length=1,
        description="The 'aud' tokens must carry (tokens for other services are refused).",
    )
    token_max_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="The longest a token may live: 'token issue --ttl' and a token's exp "
        "beyond it are refused.",
    )
    embedded_issuer: bool = Field(
        True, description="Trust tokens signed by the key in DATA_DIR (token issue)."
    )

    # Rate limits of the HTTP API (per process).
    rate_limit_per_source: float = Field(
        50.0,
        ge=0,
        description="Requests a second one client address may make (bursts of ten seconds' "
        "worth); past it, 429 with Retry-After. 0: no limit.",
    )
    rate_limit_per_principal: float = Field(
        20.0,
        ge=0,
        description="Requests a second one token subject may make (bursts of ten seconds' "
        "worth); past it, 429 with Retry-After. 0: no limit.",
    )
    rate_limit_loopback: bool = Field(
        False,
        description="Limit loopback clients too (off: the embedded default's own user and "
        "local tools are not limited; a proxy on this host should forward client addresses).",
    )

    # Lifecycle workers.
    worker_concurrency: int = Field(4, ge=1, le=256, description="CVMs one worker handles at once.")
    lease_seconds: float = Field(
        60.0, gt=0, description="How long a worker owns a CVM before others may take it over."
    )
    poll_seconds: float = Field(1.0, gt=0, description="Idle wait between looks for work.")
    retry_base_seconds: float = Field(2.0, gt=0, description="First retry delay after a failure.")
    retry_max_seconds: float = Field(300.0, gt=0, description="Cap of the retry delay.")
    sweep_seconds: float = Field(
        300.0, gt=0, description="Interval of the sweep that removes machines no CVM owns."
    )
    retry_give_up_seconds: float = Field(
        86400.0, gt=0, description="Retryable failures past this age mark the CVM failed."
    )
    create_timeout_seconds: float = Field(
        1800.0,
        gt=0,
        description="A machine still being created this long after its CVM was asked for "
        "counts as a failing create (retried, then given up).",
    )

    # Agents endpoint.
    agents_host: str = Field(
        "127.0.0.1", description="Address the agents' gRPC endpoint listens on."
    )
    agents_port: int = Field(7018, ge=1, le=65535, description="Port of the agents' gRPC endpoint.")
    agents_share_port: bool = Field(
        False,
        description="Let several agents endpoints on this host share agents_port "
        "(SO_REUSEPORT; they must then share one agents CA). Off: a second one fails at start.",
    )
    agents_public_address: str | None = Field(
        None,
        description="host:port agents dial, put in their configuration. "
        "Default: localhost:AGENTS_PORT.",
    )
    agents_server_names: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"],
        description="Names and addresses in the agents endpoint's TLS certificate "
        "(the public address's host is always added).",
    )
    agents_ca_cert: Path | None = Field(
        None, description="The agents CA's certificate (PEM). Default: one in DATA_DIR."
    )
    agents_ca_key: Path | None = Field(None, description="The agents CA's private key (PEM).")
    agents_key_encryption_key: str | None = Field(
        None,
        description="Base64 of 32 bytes sealing agents' private keys at rest. "
        "Default: a key file in DATA_DIR.",
    )
    agent_cert_days: int = Field(
        365,
        ge=1,
        description="Validity of each client certificate issued to a CVM's agent (at create, "
        "or by POST .../certificates and .../renew).",
    )
    certificate_warn_days: int = Field(
        14,
        ge=0,
        description="Write a warning event when a CVM's newest valid agent certificate "
        "expires within this many days (once per certificate; 0: never).",
    )
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="Interval of agentStateReq heartbeats on each agent's stream."
    )
    offline_after_seconds: float = Field(
        30.0, gt=0, description="An agent not answering for this long is offline."
    )
    events_retention_days: int = Field(30, ge=1, description="Days of agent logs and events kept.")
    events_per_cvm: int = Field(
        10_000, ge=10, description="Most agent logs and events kept per CVM (oldest go first)."
    )
    events_bytes_per_cvm: int = Field(
        8 * 1024 * 1024,
        ge=65536,
        description="Most bytes of agent logs and events kept per CVM (oldest go first).",
    )
    agent_message_max_bytes: int = Field(
        8192,
        ge=256,
        le=1024 * 1024,
        description="An agent's log message or event details longer than this is cut "
        "(and marked with its length).",
    )
    agent_bytes_per_second: int = Field(
        16384,
        ge=1024,
        description="What one CVM's agent may send, sustained (bursts of 16 seconds' worth "
        "pass; a message costs at least 256 bytes); the rest is dropped and reported as "
        "one rate_limited event.",
    )
    evidence_max_bytes: int = Field(
        262_144,
        ge=8192,
        le=4 * 1024 * 1024,
        description="Larger evidence is refused unread (a report with its certificates, a "
        "quote, or a vTPM attestation with its event log fits well within the default).",
    )
    evidence_per_minute: int = Field(
        4, ge=1, description="Evidence one CVM's agent may send a minute (a burst of as many)."
    )

    # Attestation.
    attestation_token_minutes: int = Field(
        60, ge=1, description="Lifetime of the attestation tokens issued for verified evidence."
    )
    attestation_key_rotation_days: int = Field(
        30, ge=1, description="Age at which the token signing key is replaced."
    )
    attestation_trust_on_first_use: bool = Field(
        False,
        description="Pin a CVM's policy from its first verified evidence when no reference "
        "values are configured (weaker than reference values).",
    )
    attestation_fetch: bool = Field(
        True,
        description="Fetch VCEKs and TDX collateral from AMD KDS / Intel PCS when the "
        "evidence does not carry them (cached in DATA_DIR/endorsements).",
    )
    attestation_crl: Literal["policy", "open", "closed"] = Field(
        "policy",
        description="When AMD's CRL is applied to SEV-SNP chains: 'policy' (when a CVM's "
        "policy sets check_crl; a CRL that cannot be had then refuses), 'open' (always; "
        "accepted, noted, when it cannot be had), 'closed' (always; refused then).",
    )
    azure_attestation_jwks_file: Path | None = Field(
        None, description="JWKS of the Azure Attestation provider whose tokens agents send."
    )
    azure_attestation_jwks_url: str | None = Field(
        None,
        description="The Azure Attestation provider's JWKS URL (e.g. "
        "https://sharedeus2.eus2.attest.azure.net/certs), fetched when a token names a new key.",
    )

    # The web console.
    console: bool = Field(True, description="Serve the web console at BASE_PATH/ui/.")
    sign_in_link: bool = Field(
        True,
        description="serve prints the console's URL with a one-time sign-in link (loopback "
        "only, usable once within 10 minutes; on a terminal only, never logged).",
    )
    sign_in_domain: str = Field(
        "c1adf32-3dac-4aad-bead-ae96fe071239",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="The domain (workspace) the sign-in link's admin token is for.",
    )

    # The embedded default's host manager.
    local_manager: bool = Field(
        False,
        description="Run a host manager beside serve (development mode: plain VMs, marked not "
        "confidential), building its guest image on first use; enables 'ultraviolet'.",
    )

    # Statistics.
    stats_retention_days: int = Field(90, ge=1, description="Days of uptime samples kept.")
    stats_interval_seconds: float = Field(300.0, gt=0, description="Uptime sampling interval.")

    @field_validator("base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        segments = [segment for segment in value.split("/") if segment]
        return "".join(f"/{segment}" for segment in segments)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'prism-backends.db').resolve()}"

    @property
    def effective_agents_address(self) -> str:
        return self.agents_public_address or f"localhost:{self.agents_port}"

    @property
    def effective_agents_server_names(self) -> list[str]:
        host = self.effective_agents_address.rsplit(":", 1)[0].strip("[]")
        names = list(self.agents_server_names)
        if self.local_manager:
            # Guests under user-mode networking reach this host's loopback there.
            names.append(SLIRP_HOST_ADDRESS)
        return names if host in names else [host, *names]

    @property
    def effective_metrics_dir(self) -> Path:
        return self.metrics_dir if self.metrics_dir is not None else self.data_dir / "metrics"

    @property
    def effective_providers_dir(self) -> Path | None:
        if self.providers_dir is not None:
            return self.providers_dir
        default = self.data_dir / "providers"
        return default if default.is_dir() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` are flags (None means 'not given')."""
    return load_layered(Settings, config_file or _env_config_file(), **overrides)


def _env_config_file() -> Path | None:
    raw = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(raw) if raw else None
