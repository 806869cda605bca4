"""The console link ``serve`` prints at start: its URL with a one-time
sign-in code in the fragment (never sent to a server, so never in an access
log). Printed on stdout, and only to a terminal: a code is a bearer secret
and must not end up in a log file."""

from __future__ import annotations

import ipaddress
import logging
import sys

import typer

from prism_backends.config import Settings
from prism_backends.console.signin import SignInCodes

log = logging.getLogger("prism_backends")


def offers_sign_in_link(settings: Settings) -> bool:
    return settings.sign_in_link and settings.console and settings.embedded_issuer


def print_sign_in_link(codes: SignInCodes, host: str, port: int, base_path: str) -> None:
    loopback = _loopback_for(host)
    if loopback is None:
        log.info(
            "console: no sign-in link (it works only from loopback; the API listens on %s)", host
        )
        return
    console = f"http://{loopback}:{port}{base_path}/ui/"
    if not sys.stdout.isatty():
        log.info(
            "console on %s (no sign-in link: stdout is not a terminal; sign in with a "
            "token from 'prism-backends token issue')",
            console,
        )
        return
    typer.echo(
        f"\n  Console: {console}#code={codes.mint()}\n"
        "  (a sign-in link for this machine: usable once, for 10 minutes)\n"
    )


def _loopback_for(host: str) -> str | None:
    """The loopback address a browser on this machine reaches the server at."""
    if host in ("", "0.0.0.0", "localhost"):  # noqa: S104 - an address compared, not bound
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_loopback:
        return None
    return f"[{host}]" if address.version == 6 else host
