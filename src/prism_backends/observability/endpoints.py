"""``/metrics`` (and ``{base}/metrics``) and ``{base}/ready``. Neither asks
for a token, as Prometheus and orchestrators do not send one; metrics are not in
the OpenAPI document (which describes the tenants' API; ``/ready`` is, beside
``/health``)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from prism_backends.db.engine import store_answers
from prism_backends.errors import StoreUnavailable
from prism_backends.http.responses import error_responses
from prism_backends.observability import exposition
from prism_backends.observability.latency import LatencyWindow
from prism_backends.observability.middleware import ObserveRequests
from prism_backends.observability.store import StoreGauges
from prism_backends.runtime import Runtime


class Readiness(BaseModel):
    status: str


def install_observability(app: FastAPI, runtime: Runtime) -> None:
    """The routes, and the request middleware: call last, so that it runs first."""
    base = runtime.settings.base_path
    latency = LatencyWindow()
    gauges = StoreGauges(runtime.sessions, lambda: tuple(runtime.agents_replicas))
    scraped = exposition.registry(latency, gauges)

    async def metrics() -> Response:
        # The store's gauges are read with a blocking session: off the event loop.
        body = await run_in_threadpool(exposition.render, scraped)
        return Response(body, media_type=exposition.CONTENT_TYPE)

    if runtime.settings.metrics_enabled:
        for path in ("/metrics", f"{base}/metrics"):
            app.add_api_route(path, metrics, methods=["GET"], include_in_schema=False)

    def ready() -> Readiness:
        if not store_answers(runtime.engine):
            raise StoreUnavailable("the store does not answer")
        return Readiness(status="ready")

    app.add_api_route(
        f"{base}/ready",
        ready,
        methods=["GET"],
        response_model=Readiness,
        tags=["health"],
        summary="Readiness probe: 200 when the store answers, else 503",
        responses=error_responses(429, 503),
    )
    app.add_middleware(ObserveRequests, latency=latency)
