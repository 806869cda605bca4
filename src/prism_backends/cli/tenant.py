"""The tenant's ``prism-backends cvms`` command as a whole: the CVMs' commands
with their agent certificates' beneath (``cvms certificates ...``)."""

from __future__ import annotations

from prism_backends.cli.certificates import certificates_app
from prism_backends.cli.cvms import cvms_app

cvms_app.add_typer(certificates_app, name="certificates")
tenant_app = cvms_app
