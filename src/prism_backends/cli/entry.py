"""The ``prism-backends`` entry point. A tenant's ``cvms`` command needs only
the HTTP client: it is dispatched before the server's modules are imported
(about 0.7 s to start instead of 3 s, paid by every call of a script)."""

from __future__ import annotations

import sys

import typer


def main() -> None:
    if sys.argv[1:2] == ["cvms"]:
        from prism_backends.cli.tenant import tenant_app

        typer.main.get_command(tenant_app).main(args=sys.argv[2:], prog_name="prism-backends cvms")
        return
    from prism_backends.cli.main import main as everything

    everything()
