"""``prism-backends cvms``: a tenant's CVMs from the command line, over the
public HTTP API through the client SDK (``prism_backends.client``).

Human output is rich tables; ``--output json`` prints the API's JSON for
scripts. Exit codes: 0 done, 1 not found / failed / any other refusal or an
unreachable service, 2 usage, 3 authentication or permission (401, 403); each
failure is one ``error: ...`` line on stderr. Where requests go: see
``cli/connection.py`` (flags > environment > profile).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer
from pydantic import BaseModel

from prism_backends.cli import cvm_views as views
from prism_backends.cli.connection import (
    EXIT_USAGE,
    DomainOpt,
    ProfileOpt,
    TokenOpt,
    UrlOpt,
    resolve,
    usage_error,
)
from prism_backends.client import AuthError, Client, ClientError, TransportError
from prism_backends.client.models import CVMOut, EventOut, StatSample

EXIT_FAILED, EXIT_AUTH = 1, 3
P = ParamSpec("P")
STATS_PAGE = 10_000  # the statistics route's largest page

cvms_app = typer.Typer(
    rich_markup_mode=None,
    help="Create, list, show and delete CVMs of a domain, and read what their agents report "
    "(over the HTTP API: --url/--token/--domain, PRISM_BACKENDS_URL/_TOKEN/_DOMAIN, or "
    "--profile; exit codes: 0 ok, 1 not found or failed, 2 usage, 3 not allowed).",
    no_args_is_help=True,
)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", help="table for people, json (the API's) for scripts.")
]
CvmIdArg = Annotated[str, typer.Argument(help="The CVM's id.", show_default=False)]
FileOpt = Annotated[
    Path | None,
    typer.Option("-o", "--out-file", help="Write to this file instead of stdout.", dir_okay=False),
]


@contextmanager
def connect(
    url: str | None, token: str | None, domain: str | None, profile: str | None
) -> Iterator[Client]:
    """A client for the resolved connection; every client failure ends the
    command with one line on stderr and its exit code."""
    connection = resolve(url, token, domain, profile)
    try:
        client = Client(connection.url, connection.token, connection.domain)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    try:
        with client:
            yield client
    except AuthError as exc:
        _fail(str(exc), EXIT_AUTH)
    except TransportError as exc:
        _fail(f"cannot reach the service at {exc.url}: {exc.reason}", EXIT_FAILED)
    except ClientError as exc:
        _fail(str(exc), EXIT_FAILED)


def pipe_safe(command: Callable[P, None]) -> Callable[P, None]:
    """A command whose reader went away (``| head``) ends quietly, not with a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except BrokenPipeError:
            # What is left buffered goes nowhere, so that exiting does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None

    return run


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


# --- commands ------------------------------------------------------------------------------------


@cvms_app.command("create")
@pipe_safe
def create(
    name: Annotated[str, typer.Argument(help="The CVM's name (unique among live CVMs).")],
    provider: Annotated[
        str, typer.Option("--provider", help="external, ultraviolet, aws, gcp or azure.")
    ],
    vcpus: Annotated[int, typer.Option("--vcpus", help="A vCPU count the provider offers.")],
    platform: Annotated[
        str, typer.Option("--platform", help="The confidential-computing platform: sev-snp, tdx.")
    ] = "sev-snp",
    log_level: Annotated[
        str, typer.Option("--log-level", help="The agent's: debug, info, warn, error.")
    ] = "info",
    agent_url: Annotated[
        str | None,
        typer.Option("--agent-url", help="Only for 'external': where its agent runs."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Makes the command safe to repeat: the same request with the same key "
            "returns the CVM made the first time.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the CVM is running, showing progress.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="With --wait: give up after this many seconds.")
    ] = 600.0,
    poll: Annotated[
        float, typer.Option("--poll", help="With --wait: seconds between looks.")
    ] = 1.0,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Create a CVM; with --wait, until it is running (exit 1 if it fails or --timeout passes)."""
    if timeout < 0 or poll <= 0:
        raise usage_error("--timeout must be >= 0 and --poll > 0")
    with connect(url, token, domain, profile) as api:
        cvm = api.create_cvm(provider, vcpus, platform, name, log_level, agent_url, idempotency_key)
        if wait:
            err = views.console(stderr=True)
            err.print(f"created {cvm.id}; waiting for it to run (up to {timeout:g} s)")
            try:
                with views.WaitDisplay(err) as display:
                    cvm = api.wait_running(cvm.id, timeout=timeout, poll=poll, on_progress=display)
            except KeyboardInterrupt:
                _fail(f"interrupted; CVM {cvm.id} was created and goes on without waiting", 130)
        _show_cvm(cvm, output)


@cvms_app.command("list")
@pipe_safe
def list_cvms(
    name: Annotated[str | None, typer.Option("--name", help="Case-insensitive substring.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="A status; 'inactive' lists deleted CVMs.")
    ] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="sev-snp or tdx.")] = None,
    days: Annotated[
        int | None, typer.Option("--days", help="Created within the last N days.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="1-100.")] = 20,
    offset: Annotated[int, typer.Option("--offset", help=">= 0.")] = 0,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List the domain's CVMs, newest first."""
    with connect(url, token, domain, profile) as api:
        page = api.list_cvms(
            name=name, status=status, cc_platform=platform, days=days, limit=limit, offset=offset
        )
    if output is Output.JSON:
        print_json(dump(page))
    else:
        views.show(views.console(), views.cvm_table(page))


@cvms_app.command("show")
@pipe_safe
def show(
    cvm_id: CvmIdArg,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Show one CVM."""
    with connect(url, token, domain, profile) as api:
        cvm = api.get_cvm(cvm_id)
    _show_cvm(cvm, output)


def _show_cvm(cvm: CVMOut, output: Output) -> None:
    if output is Output.JSON:
        print_json(dump(cvm))
    else:
        views.show(views.console(), views.cvm_details(cvm))


@cvms_app.command("delete")
@pipe_safe
def delete(
    cvm_id: CvmIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Delete a CVM (its teardown goes on in the background)."""
    with connect(url, token, domain, profile) as api:
        api.delete_cvm(cvm_id)
    typer.echo(f"deleted {cvm_id}", err=True)


@cvms_app.command("stats")
@pipe_safe
def stats(
    cvm_id: CvmIdArg,
    days: Annotated[int, typer.Option("--days", help="The window, in days.")] = 1,
    output: OutputOpt = Output.TABLE,
    limit: Annotated[
        int | None, typer.Option("--limit", help="With --output json: samples per page.")
    ] = None,
    offset: Annotated[
        int | None, typer.Option("--offset", help="With --output json: the page's start.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Uptime over the window as a bar per day, and the attestation counts."""
    with connect(url, token, domain, profile) as api:
        if output is Output.JSON:
            print_json(dump(api.statistics(cvm_id, days=days, limit=limit, offset=offset)))
            return
        first = api.statistics(cvm_id, days=days, limit=STATS_PAGE, offset=0)
        samples: list[StatSample] = list(first.cvm_stats)
        while first.cvm_stats and len(samples) < first.total:
            page = api.statistics(cvm_id, days=days, limit=STATS_PAGE, offset=len(samples))
            if not page.cvm_stats:
                break
            samples.extend(page.cvm_stats)
    shown = views.console()
    views.show(shown, views.uptime_table(views.uptime_rows(samples, days, datetime.now(UTC))))
    shown.print(f"up {100 * first.uptime:.1f}% of {first.total} samples in the last {days} day(s)")
    attestation = first.attestation
    verified_at = attestation.last_verified_at
    never = verified_at == views.NEVER
    shown.print(
        f"attestation: {attestation.verified} verified, {attestation.failed} refused; "
        f"last verified {'never' if never else verified_at}"
        + (
            f"; last refusal: {views.printable(attestation.last_error)}"
            if attestation.last_error
            else ""
        )
    )


class PolicyFormat(StrEnum):
    JSON = "json"
    CORIM = "corim"


@cvms_app.command("policy")
@pipe_safe
def policy(
    cvm_id: CvmIdArg,
    out_file: FileOpt = None,
    policy_format: Annotated[
        PolicyFormat | None,
        typer.Option("--format", help="Converted to json or corim [default: as stored]."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Write the CVM's attestation policy (the bytes clients verify against) to stdout or a file."""
    with connect(url, token, domain, profile) as api:
        document = api.attestation_policy(
            cvm_id, policy_format=policy_format.value if policy_format else None
        )
    if out_file is not None:
        out_file.write_bytes(document)
        typer.echo(f"wrote {len(document)} bytes to {out_file}", err=True)
        return
    if sys.stdout.isatty() and not _is_text(document):
        _fail("the policy is binary (CoRIM): write it with -o FILE", EXIT_USAGE)
    sys.stdout.buffer.write(document if document.endswith(b"\n") else document + b"\n")
    sys.stdout.flush()


def _is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@cvms_app.command("agent-config")
@pipe_safe
def agent_config(
    cvm_id: CvmIdArg,
    out_file: FileOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Write what the CVM's agent needs to connect (`prism-backends agent --config FILE`):
    it holds the agent's private key; a file is written readable by its owner only."""
    with connect(url, token, domain, profile) as api:
        config = api.agent_config(cvm_id)
    text = json.dumps(dump(config), indent=2) + "\n"
    typer.echo("warning: this holds the agent's private key: keep it secret", err=True)
    if out_file is None:
        sys.stdout.write(text)
        return
    _write_private(out_file, text)
    typer.echo(f"wrote {out_file} (mode 600)", err=True)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by its owner only, from
    the first byte (an existing file is narrowed to 0600 first)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_FAILED)


@cvms_app.command("events")
@pipe_safe
def events(
    cvm_id: CvmIdArg,
    limit: Annotated[int, typer.Option("--limit", help="The newest N events, 1-100.")] = 20,
    offset: Annotated[int, typer.Option("--offset", help="Skip the newest N.")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events (Ctrl-C ends).")
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", help="With --follow: seconds between looks.")
    ] = 2.0,
    output: OutputOpt = Output.TABLE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    domain: DomainOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The agent's logs and events, oldest of the page first; --follow for new ones
    (with --output json: one event per line)."""
    if poll <= 0:
        raise usage_error("--poll must be > 0")
    with connect(url, token, domain, profile) as api:
        page = api.events(cvm_id, limit=limit, offset=offset)
        if not follow:
            if output is Output.JSON:
                print_json(dump(page))
            else:
                views.show(views.console(), views.event_table(reversed(page.events)))
            return
        follower = views.EventFollower(views.console())
        oldest_first = list(reversed(page.events))
        _print_events(oldest_first, output, follower)
        last = max((int(event.id) for event in page.events), default=0)
        try:
            while True:
                time.sleep(poll)
                fresh = _events_after(api, cvm_id, last)
                _print_events(fresh, output, follower)
                last = max((int(event.id) for event in fresh), default=last)
        except KeyboardInterrupt:
            return


def _events_after(api: Client, cvm_id: str, last: int) -> list[EventOut]:
    """The events newer than ``last``, oldest first (pages back until it is reached)."""
    fresh: list[EventOut] = []
    for event in api.iter_events(cvm_id):
        if int(event.id) <= last:
            break
        fresh.append(event)
    return list(reversed(fresh))


def _print_events(events: list[EventOut], output: Output, follower: views.EventFollower) -> None:
    if output is Output.JSON:
        for event in events:
            sys.stdout.write(json.dumps(dump(event)) + "\n")
    else:
        follower.print(events)
    sys.stdout.flush()
