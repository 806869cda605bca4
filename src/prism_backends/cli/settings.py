"""``prism-backends settings``: every setting, its effective value and its help,
written as a TOML config file (so its output can become one)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.engine import make_url

from prism_backends.cli.options import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    SetOpt,
    settings_from,
)
from prism_backends.config import ENV_PREFIX, Settings

# Shown as set or not, never as their value.
SECRET_SETTINGS = frozenset({"agents_key_encryption_key"})


def settings_command(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    sets: SetOpt = None,
) -> None:
    """Print every setting with its effective value (from flags, PRISM_BACKENDS_*
    variables, the config file, or its default) and what it means, as TOML.
    Secrets are not shown (a database password is masked)."""
    settings = settings_from(config, sets=sets, data_dir=data_dir, database_url=database_url)
    typer.echo(render(settings))


def render(settings: Settings) -> str:
    blocks = []
    for name, field in Settings.model_fields.items():
        help_lines = textwrap.wrap(field.description or "", width=76)
        comment = "\n".join(f"# {line}" for line in help_lines)
        env = f"# env: {ENV_PREFIX}{name.upper()}"
        blocks.append(f"{comment}\n{env}\n{_assignment(name, getattr(settings, name))}")
    return "\n\n".join(blocks)


def _assignment(name: str, value: Any) -> str:
    if value is None:
        return f"# {name} =  (not set)"
    if name in SECRET_SETTINGS:
        return f"# {name} =  (set; not shown)"
    if name == "database_url":
        value = make_url(value).render_as_string(hide_password=True)
    return f"{name} = {_toml(value)}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    # JSON strings and lists of them are valid TOML.
    return json.dumps(value)
