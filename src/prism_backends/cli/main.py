"""The ``prism-backends`` command."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from prism_backends.agent import config as agent_config
from prism_backends.agent.client import Agent
from prism_backends.agents.runner import AgentsThread, serve_forever
from prism_backends.agents.server import PortInUse
from prism_backends.auth.keys import load_or_create_issuer_key
from prism_backends.auth.permissions import Role
from prism_backends.auth.tokens import issue_token
from prism_backends.cli.attestation import attestation_app
from prism_backends.cli.manager import manager_app
from prism_backends.cli.options import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    LogFormatOpt,
    LogLevelOpt,
    MetricsPortOpt,
    SetOpt,
    parse_duration,
    settings_from,
    setup_logging,
)
from prism_backends.cli.settings import settings_command
from prism_backends.cli.signin import offers_sign_in_link, print_sign_in_link
from prism_backends.cli.tenant import tenant_app
from prism_backends.config import Settings
from prism_backends.console.signin import SignInCodes
from prism_backends.datadir import DataDirError, prepare_data_dir, private_directory
from prism_backends.db import migrate as migrations
from prism_backends.db.backup import backup as backup_sqlite
from prism_backends.heap import settle_heap
from prism_backends.http import access_log
from prism_backends.http.app import create_app
from prism_backends.lifecycle.worker import LifecycleWorkers
from prism_backends.manager.local import LocalManager
from prism_backends.observability import exposition
from prism_backends.observability.store import StoreGauges
from prism_backends.providers.config import DEFAULT_VCPUS, ProviderConfig
from prism_backends.runtime import Runtime
from prism_backends.statistics.sampler import Sampler
from prism_backends.vocabulary import DOMAIN_ID_PATTERN

log = logging.getLogger("prism_backends")

app = typer.Typer(
    rich_markup_mode=None,
    name="prism-backends",
    help="Control plane for confidential VMs (AMD SEV-SNP, Intel TDX).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(
    rich_markup_mode=None, help="Bearer tokens from the embedded issuer.", no_args_is_help=True
)
app.add_typer(token_app, name="token")
app.add_typer(attestation_app, name="attestation")
app.add_typer(manager_app, name="manager")
app.add_typer(tenant_app, name="cvms")
app.command("settings")(settings_command)

HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host",
        help="Listen address [env: PRISM_BACKENDS_HOST; default: 127.0.0.1].",
        show_default=False,
    ),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port", help="HTTP port [env: PRISM_BACKENDS_PORT; default: 9011].", show_default=False
    ),
]


AgentsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--agents-port",
        help="Port of the agents' gRPC endpoint [env: PRISM_BACKENDS_AGENTS_PORT; default: 7018].",
        show_default=False,
    ),
]


def _runtime(settings: Settings, *, share_metrics: bool = False) -> Runtime:
    """``share_metrics``: a long-running process of the service (serve, api, worker,
    agents), whose metrics any sibling's ``/metrics`` adds up."""
    setup_logging(settings.log_level, settings.log_format)
    if share_metrics and settings.metrics_enabled:
        if settings.metrics_dir is None:
            # DATA_DIR/metrics: the data directory first, or making its
            # subdirectory would make it too, with the umask's mode.
            prepare_data_dir(settings.data_dir)
        private_directory(settings.effective_metrics_dir, "the metrics directory")
        exposition.share_between_processes(settings.effective_metrics_dir)
    return Runtime(settings)


def _serve_metrics_port(runtime: Runtime) -> None:
    settings = runtime.settings
    if settings.metrics_port is None or not settings.metrics_enabled:
        return
    try:
        gauges = StoreGauges(runtime.sessions, lambda: tuple(runtime.agents_replicas))
        exposition.serve_on_port(settings.metrics_host, settings.metrics_port, gauges)
    except OSError as exc:
        typer.echo(f"error: cannot serve metrics on port {settings.metrics_port}: {exc}", err=True)
        raise typer.Exit(1) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)


def _migrate_or_exit(runtime: Runtime) -> None:
    try:
        migrations.upgrade(runtime.engine)
    except SQLAlchemyError as exc:
        typer.echo(f"error: cannot migrate the store: {exc.__class__.__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _require_current_schema(runtime: Runtime) -> None:
    try:
        current = migrations.is_current(runtime.engine)
    except SQLAlchemyError as exc:
        typer.echo(f"error: cannot reach the store: {exc}", err=True)
        raise typer.Exit(1) from None
    if not current:
        typer.echo(
            "error: the store's schema is not current; run 'prism-backends migrate'", err=True
        )
        raise typer.Exit(1)


def _serve_http(runtime: Runtime, *, sign_in_link: bool = False) -> None:
    settings = runtime.settings
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # In JSON, uvicorn's lines go through the service's handler like every other.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        server_header=False,
        # httptools' parser (C) rather than h11's (Python): h11 validating each
        # header was about 3 % of a request's CPU (bench/README.md).
        http="httptools",
    )
    access_log.install()
    # uvicorn raises the signal that stopped it again once it is done: let that
    # reach a no-op, so that this process's own shutdown (the workers, a local
    # manager) runs instead of the process dying at once.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _already_handled)
    link = runtime.sign_in_codes if sign_in_link else None
    _HttpServer(config, settings.base_path, link).run()


class _HttpServer(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does (not before the bind)."""

    def __init__(
        self, config: uvicorn.Config, base_path: str, sign_in: SignInCodes | None = None
    ) -> None:
        super().__init__(config)
        self._base_path = base_path
        self._sign_in = sign_in

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return  # the bind failed; uvicorn said why
        settle_heap()  # the app, its lifespan and the workers are up
        for server in self.servers:
            for bound in server.sockets:
                host, port = bound.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("HTTP API on http://%s:%d%s", shown, port, self._base_path)
        if self._sign_in is not None:
            port = self.servers[0].sockets[0].getsockname()[1]
            print_sign_in_link(self._sign_in, self.config.host, port, self._base_path)


def _already_handled(_signum: int, _frame: object) -> None:
    return None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    agents_port: AgentsPortOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    local_manager: Annotated[
        bool | None,
        typer.Option(
            "--local-manager/--no-local-manager",
            help="Run a host manager beside the service (plain VMs under QEMU, development "
            "mode), so 'ultraviolet' CVMs are real VMs here [env: PRISM_BACKENDS_LOCAL_MANAGER].",
            show_default=False,
        ),
    ] = None,
    sign_in_link: Annotated[
        bool | None,
        typer.Option(
            "--sign-in-link/--no-sign-in-link",
            help="Print the console's URL with a one-time sign-in link (on a terminal; "
            "loopback only) [env: PRISM_BACKENDS_SIGN_IN_LINK; default: on].",
            show_default=False,
        ),
    ] = None,
    sets: SetOpt = None,
) -> None:
    """Run everything in one process: migrate the store, then the HTTP API, the agents'
    endpoint, the lifecycle workers and the uptime sampler (and, with --local-manager,
    a host manager beside them)."""
    settings = settings_from(
        config,
        sets=sets,
        host=host,
        port=port,
        agents_port=agents_port,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
        log_format=log_format,
        local_manager=local_manager,
        sign_in_link=sign_in_link,
    )
    runtime = _runtime(settings, share_metrics=True)
    _migrate_or_exit(runtime)
    beside = _start_local_manager(runtime) if settings.local_manager else None
    workers = LifecycleWorkers(settings, runtime.sessions, runtime.catalog, runtime.agent_bootstrap)
    sampler = Sampler(settings, runtime.sessions)
    agents = AgentsThread(runtime)
    try:
        agents.start()
    except Exception as exc:
        typer.echo(f"error: the agents endpoint cannot start: {exc}", err=True)
        runtime.close()
        raise typer.Exit(1) from None
    workers.start()
    sampler.start()
    try:
        _serve_http(runtime, sign_in_link=offers_sign_in_link(settings))
    finally:
        agents.stop()
        sampler.stop()
        workers.stop()
        if beside is not None:
            beside.stop()
        runtime.close()


def _start_local_manager(runtime: Runtime) -> LocalManager | None:
    """Start the manager beside the service; 'ultraviolet' is enabled only if it answers."""
    beside = LocalManager(
        runtime.settings.data_dir / "manager", log_level=runtime.settings.log_level
    )
    try:
        settings = beside.start()
    except (OSError, RuntimeError) as exc:
        log.error("the local manager is not available, so neither is 'ultraviolet': %s", exc)
        beside.stop()
        return None
    runtime.extra_providers["ultraviolet"] = ProviderConfig(
        name="ultraviolet",
        enabled=True,
        driver="ultraviolet",
        settings={**DEFAULT_VCPUS["ultraviolet"], **settings},
        source=f"the local manager in {beside.data_dir}",
    )
    log.info("local manager on localhost:%d (pid %d)", beside.port, beside.pid)
    return beside


@app.command()
def api(
    config: ConfigOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    sets: SetOpt = None,
) -> None:
    """Run only the HTTP API (run any number, on PostgreSQL, beside 'worker')."""
    settings = settings_from(
        config,
        sets=sets,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
        log_format=log_format,
    )
    runtime = _runtime(settings, share_metrics=True)
    try:
        _require_current_schema(runtime)
        _serve_http(runtime)
    finally:
        runtime.close()


@app.command()
def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    metrics_port: MetricsPortOpt = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            max=256,
            show_default=False,
            help="CVMs handled at once [env: PRISM_BACKENDS_WORKER_CONCURRENCY; default: 4].",
        ),
    ] = None,
    sets: SetOpt = None,
) -> None:
    """Run only the lifecycle workers (run any number, on PostgreSQL)."""
    settings = settings_from(
        config,
        sets=sets,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
        worker_concurrency=concurrency,
    )
    runtime = _runtime(settings, share_metrics=True)
    try:
        _require_current_schema(runtime)
    except typer.Exit:
        runtime.close()
        raise
    workers = LifecycleWorkers(settings, runtime.sessions, runtime.catalog, runtime.agent_bootstrap)
    sampler = Sampler(settings, runtime.sessions)
    stopping = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _serve_metrics_port(runtime)
    workers.start()
    sampler.start()
    settle_heap()
    while not stopping.wait(1.0):
        pass
    log.info("stopping lifecycle workers")
    sampler.stop()
    workers.stop()
    runtime.close()


@app.command()
def agents(
    config: ConfigOpt = None,
    agents_port: AgentsPortOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    metrics_port: MetricsPortOpt = None,
    sets: SetOpt = None,
) -> None:
    """Run only the agents' gRPC endpoint (run several replicas, on PostgreSQL)."""
    settings = settings_from(
        config,
        sets=sets,
        agents_port=agents_port,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
    )
    runtime = _runtime(settings, share_metrics=True)
    try:
        _require_current_schema(runtime)
        _serve_metrics_port(runtime)
        sampler = Sampler(settings, runtime.sessions)
        sampler.start()
        settle_heap()  # before the streams: theirs are the objects that come and go
        try:
            asyncio.run(serve_forever(runtime))
        except PortInUse as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            sampler.stop()
    finally:
        runtime.close()


@app.command()
def agent(
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The JSON of GET .../cvms/{id}/agent_config, saved as is.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env",
            help="Cocos' environment file (AGENT_CVM_GRPC_URL, AGENT_CVM_ID, the certificate "
            "paths), as a host manager hands it to its guests.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level", help="Override the configuration's log level.", show_default=False
        ),
    ] = None,
) -> None:
    """Run the reference agent of a CVM: connect, stay connected, send evidence."""
    if config_file is not None and env_file is None:
        path, loader = config_file, agent_config.load
    elif env_file is not None and config_file is None:
        path, loader = env_file, agent_config.load_environment
    else:
        raise typer.BadParameter("give exactly one of --config and --env")
    try:
        settings = loader(path)
    except agent_config.AgentConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config/--env") from None
    level = (log_level or settings.log_level).lower()
    setup_logging({"warn": "warning"}.get(level, level))
    # Read again at every heartbeat: a renewed agent_config dropped in place is
    # picked up without a restart.
    raise typer.Exit(asyncio.run(Agent(settings, reload=lambda: loader(path)).run()))


@app.command()
def migrate(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    sets: SetOpt = None,
) -> None:
    """Apply the database migrations to the configured store."""
    settings = settings_from(config, sets=sets, data_dir=data_dir, database_url=database_url)
    runtime = _runtime(settings)
    _migrate_or_exit(runtime)
    typer.echo(f"store is at schema {migrations.current_revision(runtime.engine)}", err=True)
    runtime.close()


@app.command()
def backup(
    target: Annotated[Path, typer.Argument(help="Where to write the copy (a new file).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    sets: SetOpt = None,
) -> None:
    """Copy the embedded SQLite store while the service runs (an online backup).

    To restore: stop the service, put the copy at DATA_DIR/prism-backends.db
    (removing any -wal and -shm files beside it), start again. For PostgreSQL
    use pg_dump and pg_restore."""
    settings = settings_from(config, sets=sets, data_dir=data_dir, database_url=database_url)
    if settings.database_url is not None:
        typer.echo("error: the store is PostgreSQL: back it up with pg_dump", err=True)
        raise typer.Exit(2)
    database = settings.data_dir / "prism-backends.db"
    if not database.is_file():
        typer.echo(f"error: there is no store at {database}", err=True)
        raise typer.Exit(1)
    try:
        pages = backup_sqlite(database, target)
    except (OSError, sqlite3.Error) as exc:
        typer.echo(f"error: cannot back up {database} to {target}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"backed up {database} to {target} ({pages} pages)", err=True)


@token_app.command("issue")
def token_issue(
    domain: Annotated[
        str, typer.Option("--domain", help="Domain (workspace) id the token is for.")
    ],
    role: Annotated[
        Role, typer.Option("--role", help="admin: read, create, delete; member: read.")
    ] = Role.ADMIN,
    user: Annotated[str, typer.Option("--user", help="The token's subject.")] = "admin",
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 30m, 24h, 7d.")] = "24h",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print one bearer token from the embedded issuer (key in the data directory)."""
    if not DOMAIN_ID_PATTERN.fullmatch(domain):
        raise typer.BadParameter("1-64 characters of A-Z a-z 0-9 . _ -", param_hint="--domain")
    settings = settings_from(config, data_dir=data_dir)
    lifetime = parse_duration(ttl)
    if lifetime > timedelta(days=settings.token_max_days):
        raise typer.BadParameter(
            f"at most {settings.token_max_days}d (token_max_days)", param_hint="--ttl"
        )
    key = load_or_create_issuer_key(settings.data_dir)
    typer.echo(
        issue_token(
            key,
            issuer=settings.jwt_issuer,
            domain_id=domain,
            role=role,
            subject=user,
            ttl=lifetime,
            audience=settings.jwt_audience,
        )
    )


def main() -> None:
    """The ``prism-backends`` command: problems with the data directory are one
    line naming the path and the cause, not a traceback."""
    try:
        app()
    except DataDirError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
