"""``prism-backends cvms certificates``: a CVM's agent certificates (list,
issue, renew, revoke), as the console's buttons manage them. The same
connection, output and exit codes as the rest of ``cvms``."""

from __future__ import annotations

from typing import Annotated

import typer

from prism_backends.cli import cvm_views as views
from prism_backends.cli.connection import DomainOpt, ProfileOpt, TokenOpt, UrlOpt
from prism_backends.cli.cvms import (
    CvmIdArg,
    Output,
    OutputOpt,
    connect,
    dump,
    pipe_safe,
    print_json,
)
from prism_backends.client.models import Certificate

certificates_app = typer.Typer(
    rich_markup_mode=None,
    help="A CVM's agent certificates: list them, issue one, renew one without a gap "
    "(the old stays valid until the agent connects with the new), revoke one.",
    no_args_is_help=True,
)

SerialArg = Annotated[
    str, typer.Argument(help="The certificate's serial (hex, as listed).", show_default=False)
]
_AFTERWARDS = "the agent picks it up from a fresh agent-config (its config file, rewritten)"


@certificates_app.command("list")
@pipe_safe
def list_certificates(
    cvm_id: CvmIdArg,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Every certificate the CVM's agent was given, newest first."""
    with connect(url, token, domain, profile) as api:
        page = api.certificates(cvm_id)
    if output is Output.JSON:
        print_json(dump(page))
    else:
        views.show(views.console(), views.certificate_table(page.certificates))


@certificates_app.command("issue")
@pipe_safe
def issue(
    cvm_id: CvmIdArg,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Issue one more certificate (pending until the agent connects with it)."""
    with connect(url, token, domain, profile) as api:
        issued = api.issue_certificate(cvm_id)
    _show(issued, output, f"issued {issued.serial}; {_AFTERWARDS}")


@certificates_app.command("renew")
@pipe_safe
def renew(
    cvm_id: CvmIdArg,
    serial: SerialArg,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Issue a successor to SERIAL, which stays valid until the agent connects with it."""
    with connect(url, token, domain, profile) as api:
        renewed = api.renew_certificate(cvm_id, serial)
    _show(renewed, output, f"renewed {serial} as {renewed.serial}; {_AFTERWARDS}")


@certificates_app.command("revoke")
@pipe_safe
def revoke(
    cvm_id: CvmIdArg,
    serial: SerialArg,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Revoke SERIAL: refused from now on; an agent connected with it is told to go."""
    with connect(url, token, domain, profile) as api:
        revoked = api.revoke_certificate(cvm_id, serial)
    _show(revoked, output, f"revoked {revoked.serial}")


def _show(certificate: Certificate, output: Output, done: str) -> None:
    if output is Output.JSON:
        print_json(dump(certificate))
        return
    views.show(views.console(), views.certificate_table([certificate]))
    typer.echo(done, err=True)
