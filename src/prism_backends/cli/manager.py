"""``prism-backends manager``: the host daemon that launches one QEMU VM per CVM,
and ``manager image build``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from prism_backends.cli.options import loaded_or_exit, setup_logging
from prism_backends.manager import daemon, image
from prism_backends.manager.settings import load_manager_settings

manager_app = typer.Typer(
    rich_markup_mode=None,
    help="The host manager: Cocos' ManagerService over mutual TLS, one QEMU VM per CVM.",
    invoke_without_command=True,
)
image_app = typer.Typer(
    rich_markup_mode=None, help="The guest image the manager boots.", no_args_is_help=True
)
manager_app.add_typer(image_app, name="image")

ManagerConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="PRISM_MANAGER_CONFIG",
        help="TOML file (keys as the PRISM_MANAGER_* variables, lower-case, unprefixed).",
        show_default=False,
    ),
]
ManagerDataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="VM state, shares, console logs, the guest image and TLS material "
        "[env: PRISM_MANAGER_DATA_DIR; default: ./.prism-manager].",
        show_default=False,
    ),
]


@manager_app.callback()
def manager(
    context: typer.Context,
    config: ManagerConfigOpt = None,
    data_dir: ManagerDataDirOpt = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address [default: 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="gRPC port [default: 7019; 0: any].")
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option("--health-port", help="Port of /health and /metrics [default: 7021; 0: any]."),
    ] = None,
    max_vms: Annotated[
        int | None, typer.Option("--max-vms", help="Most VMs [default: 10].")
    ] = None,
    development: Annotated[
        bool | None,
        typer.Option(
            "--development/--no-development",
            help="Allow plain VMs where there is no SEV-SNP or TDX (not confidential).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = None,
) -> None:
    """Run the host manager (until SIGINT or SIGTERM; its VMs keep running and are
    re-adopted at the next start)."""
    settings = loaded_or_exit(
        load_manager_settings,
        config,
        data_dir=data_dir,
        host=host,
        port=port,
        health_port=health_port,
        max_vms=max_vms,
        development=development,
        log_level=log_level,
    )
    context.obj = settings
    if context.invoked_subcommand is not None:
        return
    setup_logging(settings.log_level)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    try:
        daemon.run_until(settings, stopping)
    except (image.ImageError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@image_app.command("build")
def image_build(
    context: typer.Context,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Download the packages again.")
    ] = False,
) -> None:
    """Build the guest image (kernel + initramfs with the agent) from Debian packages,
    or reuse the cached one if its inputs have not changed; print its digest."""
    settings = context.obj
    setup_logging(settings.log_level)
    try:
        built = image.ensure(settings.effective_images_dir, refresh=refresh)
    except image.ImageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"kernel  {built.kernel}")
    typer.echo(f"initrd  {built.initrd}")
    typer.echo(f"cmdline {built.command_line}")
    typer.echo(f"digest  sha256:{built.digest}")
