"""The ASGI application: routes under the base path, one error handler."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from prism_backends import __version__
from prism_backends.agents.endpoints import router as agents_router
from prism_backends.attestation.endpoints import router as attestation_router
from prism_backends.console.endpoints import install_console
from prism_backends.cvms.endpoints import router as cvms_router
from prism_backends.http.errors import install_error_handlers
from prism_backends.http.head import HeadAsGet
from prism_backends.http.ratelimit import RequestLimits, SourceLimit
from prism_backends.http.responses import error_responses
from prism_backends.observability.endpoints import install_observability
from prism_backends.offerings.endpoints import router as offerings_router
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
        # No Swagger UI: FastAPI's loads its scripts from a CDN, blank offline.
        # The document itself is served; any OpenAPI viewer renders it.
        docs_url=None,
        redoc_url=None,
        # /cvms/ is not /cvms: answer 404 rather than redirect (a redirected POST
        # would create from a path the client did not send).
        redirect_slashes=False,
        # The service's metrics are its own (observability/, Prometheus'). FastAPI's
        # OpenTelemetry instrumentation, on by default, looked up the global
        # providers on every request to find none configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.runtime = runtime
    limits = RequestLimits.from_settings(runtime.settings)
    app.state.limits = limits
    app.add_middleware(HeadAsGet)
    # Added after HeadAsGet, so it runs before it: a refused request costs nothing more.
    # Only the request observer (install_observability, below) runs before it.
    app.add_middleware(SourceLimit, limits=limits)
    install_error_handlers(app)
    app.include_router(cvms_router, prefix=base)
    app.include_router(agents_router, prefix=base)
    app.include_router(attestation_router, prefix=base)
    app.include_router(offerings_router, prefix=base)

    @app.get(
        f"{base}/health",
        response_model=Health,
        tags=["health"],
        summary="Liveness probe",
        responses=error_responses(429),
    )
    def health() -> Health:
        return Health(status="ok")

    if runtime.settings.console:
        install_console(app, base)
    install_observability(app, runtime)  # its middleware added last: outermost

    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    return app


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents a 422 on every route; this API answers 400 instead."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas.update(_hoisted_definitions(document))
        app.openapi_schema = document
    return app.openapi_schema


def _hoisted_definitions(document: dict[str, Any]) -> dict[str, Any]:
    """Request-body schemas pasted in by hand carry their own ``$defs``; move them
    to ``components.schemas`` (where their references point) so they resolve."""
    hoisted: dict[str, Any] = {}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                hoisted.update(media.get("schema", {}).pop("$defs", {}))
    return hoisted
