"""Where the tenant commands (``prism-backends cvms ...``) send their requests:
the service's URL, the bearer token and the domain id, from flags, from the
environment, or from a profile file.

Precedence, field by field: a flag (``--url``, ``--token``, ``--domain``) >
its variable (``PRISM_BACKENDS_URL``, ``PRISM_BACKENDS_TOKEN``,
``PRISM_BACKENDS_DOMAIN``) > the profile. The domain follows the token: if
neither flag nor variable names it, it is the profile's domain when the token
is the profile's, else the token's own ``domain`` claim (read without
verifying it; the service verifies the token).

The profile file is ``$PRISM_BACKENDS_PROFILES`` or
``~/.config/prism-backends/profiles.toml``::

    default = "local"            # used when no --profile / PRISM_BACKENDS_PROFILE is given

    [profiles.local]
    url = "http://127.0.0.1:9011/backends"
    token = "eyJ..."
    domain = "acme"              # optional: the token's domain claim otherwise
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from prism_backends.client import domain_claim

DEFAULT_URL = "http://127.0.0.1:9011/backends"
PROFILES_ENV = "PRISM_BACKENDS_PROFILES"
EXIT_USAGE = 2

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="PRISM_BACKENDS_URL",
        help=f"The service's base URL [default: the profile's, else {DEFAULT_URL}].",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="PRISM_BACKENDS_TOKEN",
        help="Bearer token [default: the profile's].",
        show_default=False,
    ),
]
DomainOpt = Annotated[
    str | None,
    typer.Option(
        "--domain",
        envvar="PRISM_BACKENDS_DOMAIN",
        help="Domain id [default: the profile's, else the token's domain claim].",
        show_default=False,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        envvar="PRISM_BACKENDS_PROFILE",
        help=f"A profile of the profile file (${PROFILES_ENV} or "
        "~/.config/prism-backends/profiles.toml) [default: its 'default' one, if any].",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class Connection:
    url: str
    token: str
    domain: str


def usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def profiles_path() -> Path:
    configured = os.environ.get(PROFILES_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "prism-backends" / "profiles.toml"


def resolve(
    url: str | None, token: str | None, domain: str | None, profile: str | None
) -> Connection:
    """The connection the options, the environment and the profile amount to."""
    chosen = _profile(profile)
    token_from_profile = token is None and "token" in chosen
    url = url or chosen.get("url") or DEFAULT_URL
    token = token or chosen.get("token")
    if not token:
        raise usage_error("no token: give --token, set PRISM_BACKENDS_TOKEN, or use a profile")
    if not url.startswith(("http://", "https://")):
        raise usage_error(f"--url must start with http:// or https://, not {url!r}")
    if domain is None:
        domain = chosen.get("domain") if token_from_profile else None
        domain = domain or domain_claim(token) or chosen.get("domain")
    if not domain:
        raise usage_error(
            "no domain: give --domain or set PRISM_BACKENDS_DOMAIN (the token names none)"
        )
    return Connection(url=url, token=token, domain=domain)


def _profile(name: str | None) -> dict[str, str]:
    path = profiles_path()
    if not path.is_file():
        if name is not None:
            raise usage_error(f"profile {name!r}: no profile file at {path}")
        return {}
    document = _read(path)
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise usage_error(f"{path}: 'profiles' must be a table of profiles")
    if name is None:
        default = document.get("default", "default" if "default" in profiles else None)
        if default is None:
            return {}
        name = str(default)
    chosen = profiles.get(name)
    if not isinstance(chosen, dict):
        known = ", ".join(sorted(profiles)) or "none"
        raise usage_error(f"no profile {name!r} in {path} (profiles: {known})")
    fields = {key: value for key, value in chosen.items() if key in ("url", "token", "domain")}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise usage_error(f"{path}: profiles.{name}.{key} must be a string")
    if "token" in fields:
        _warn_if_readable_by_others(path)
    return fields


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise usage_error(f"cannot read {path}: {exc}") from None


def _warn_if_readable_by_others(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        print(
            f"warning: {path} holds tokens and others may read it (chmod 600 {path})",
            file=sys.stderr,
        )
