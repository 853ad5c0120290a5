"""The public HTTP API (FastAPI), served as the ingress deployment of the Serve app.

``/healthz``, ``/livez`` and ``/metrics`` need no key (probes and scrapers); everything under ``/v1``
needs one of the configured API keys with the route's scope (:mod:`serve.auth`). The routes live in
router modules (``serve.routes_*``); this module puts them together with the middleware every request
goes through: request metrics (:mod:`serve.http_metrics`) and body size limits (:mod:`serve.body_limit`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from deepwatch import __version__
from deepwatch.contracts import SCHEMA_VERSION
from deepwatch.settings import Settings
from serve import routes_exports, routes_failures, routes_records, routes_score, routes_submit, routes_workbench
from serve.auth import require_scope
from serve.body_limit import BodyLimit
from serve.context import ApiContext, configure, configured, context
from serve.health import run_checks
from serve.http_metrics import RequestMetrics, metrics_response

# Paths whose bodies are media uploads, limited by api_max_upload_bytes instead of api_max_request_bytes.
UPLOAD_PATHS = ("/v1/score",)


def body_limit(path: str) -> int | None:
    """Read per request: a Serve replica configures its settings after the app was built."""
    ctx = configured()
    if ctx is None:
        return None  # every route answers 503 before configure; nothing is read
    if path.rstrip("/") in UPLOAD_PATHS:
        return ctx.settings.api_max_upload_bytes
    return ctx.settings.api_max_request_bytes


def build_api(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; routes find their settings through :func:`serve.context.configure`."""
    app = FastAPI(title="deepwatch", version=__version__)
    # the last added runs first: metrics see every request, a refused body included
    app.add_middleware(BodyLimit, limit_for=body_limit)
    app.add_middleware(RequestMetrics)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok", "pid": str(os.getpid())}

    @app.get("/healthz")
    async def healthz(ctx: Annotated[ApiContext, Depends(context)]) -> JSONResponse:
        parts = {"api": {"status": "ok", "version": __version__}} | await run_checks(ctx.checks)
        healthy = all(p["status"] in ("ok", "unconfigured") for p in parts.values())
        body = {"status": "ok" if healthy else "degraded", "parts": parts}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus exposition of this process's default registry."""
        return metrics_response()

    @app.get("/v1/version", dependencies=[Depends(require_scope("read"))])
    async def version() -> dict[str, Any]:
        return {"version": __version__, "schema_version": SCHEMA_VERSION}

    app.include_router(routes_records.router)
    app.include_router(routes_submit.router)
    app.include_router(routes_score.router)
    app.include_router(routes_workbench.router)
    app.include_router(routes_exports.router)
    app.include_router(routes_failures.router)

    if settings is not None:
        configure(settings)
    return app
