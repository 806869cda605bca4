"""The ASGI application: routes under the base path, one error handler."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from prism_backends import __version__
from prism_backends.cvms.endpoints import router as cvms_router
from prism_backends.http.errors import install_error_handlers
from prism_backends.runtime import Runtime


class Health(BaseModel):
    status: str


def create_app(runtime: Runtime) -> FastAPI:
    base = runtime.settings.base_path
    app = FastAPI(
        title="prism-backends",
        version=__version__,
        description="Confidential VMs (AMD SEV-SNP, Intel TDX) on Azure, GCP, AWS, "
        "Ultraviolet hosts or the tenant's own machines.",
        openapi_url=f"{base}/openapi.json",
        docs_url=f"{base}/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(cvms_router, prefix=base)

    @app.get(f"{base}/health", response_model=Health, tags=["health"], summary="Liveness probe")
    def health() -> Health:
        return Health(status="ok")

    return app
