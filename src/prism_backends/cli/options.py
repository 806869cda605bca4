"""Options shared by the commands, and turning them into settings."""

from __future__ import annotations

import difflib
import json
import logging
import re
import tomllib
import typing
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from prism_backends.config import Settings, load_settings
from prism_backends.observability import logs

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="PRISM_BACKENDS_CONFIG",
        help="TOML config file (keys as the PRISM_BACKENDS_* variables, lower-case, unprefixed).",
        show_default=False,
    ),
]


def _data_dir(value: str | None) -> Path | None:
    # A Path option would turn "" into "." (the current directory): refuse it here.
    if value is None:
        return None
    if not value.strip():
        raise typer.BadParameter("must not be empty (give a directory path)")
    return Path(value)


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory for the SQLite store and keys "
        "[env: PRISM_BACKENDS_DATA_DIR; default: ./.prism-backends].",
        show_default=False,
        parser=_data_dir,
    ),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql+psycopg://user@host/db to use PostgreSQL "
        "[env: PRISM_BACKENDS_DATABASE_URL; default: SQLite in the data directory].",
        show_default=False,
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(
        "--log-level",
        help="debug, info, warning or error [env: PRISM_BACKENDS_LOG_LEVEL; default: info].",
        show_default=False,
    ),
]
LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="text, or json (one object per line) [env: PRISM_BACKENDS_LOG_FORMAT; default: text].",
        show_default=False,
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Also serve /metrics on this port [env: PRISM_BACKENDS_METRICS_PORT; default: none].",
        show_default=False,
    ),
]


SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="NAME=VALUE",
        help="Any setting by its name, as in the config file (repeatable; lists as JSON): "
        "e.g. --set rate_limit_per_source=100. 'prism-backends settings' lists them all.",
        show_default=False,
    ),
]

SettingsT = TypeVar("SettingsT")


def settings_from(config: Path | None, sets: list[str] | None = None, **flags: Any) -> Settings:
    """Settings from flags (a named flag beats ``--set``), environment and config
    file, or a clean exit on bad values."""
    given = {name: value for name, value in flags.items() if value is not None}
    return loaded_or_exit(load_settings, config, **{**parse_sets(sets), **given})


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``--set NAME=VALUE`` pairs as setting values (JSON for lists and maps)."""
    values: dict[str, Any] = {}
    for item in items or ():
        name, equals, raw = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not equals or not name:
            raise typer.BadParameter(f"{item!r}: use NAME=VALUE", param_hint="--set")
        field = Settings.model_fields.get(name)
        if field is None:
            near = difflib.get_close_matches(name, Settings.model_fields, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise typer.BadParameter(
                f"no setting {name!r}{hint}; 'prism-backends settings' lists them",
                param_hint="--set",
            )
        values[name] = _typed(name, raw.strip(), field.annotation)
    return values


def _typed(name: str, raw: str, annotation: Any) -> Any:
    if typing.get_origin(annotation) in (list, dict) or annotation in (list, dict):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise typer.BadParameter(
                f"{name}: {raw!r} is not JSON (e.g. '[\"EdDSA\"]')", param_hint="--set"
            ) from None
    return raw


def loaded_or_exit(
    loader: Callable[..., SettingsT], config: Path | None, **flags: Any
) -> SettingsT:
    """``loader(config, **flags)``, with bad values turned into a usage error."""
    if config is not None and not config.is_file():
        raise typer.BadParameter(f"{config} is not a file", param_hint="--config")
    try:
        return loader(config, **flags)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise typer.BadParameter(problems) from None
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from None
    except SettingsError as exc:
        raise typer.BadParameter(f"{exc} (lists are JSON, e.g. '[\"EdDSA\"]')") from None


# The cloud SDKs log request bodies and headers at DEBUG (botocore logs the
# user data, which carries the agent's private key): they speak at WARNING
# whatever the service's level.
SDK_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "azure", "msal", "google")


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logs.formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(raw: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``."""
    match = _DURATION.fullmatch(raw.strip())
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter(
            f"{raw!r}: use a positive number with s, m, h or d (e.g. 24h)", param_hint="--ttl"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
