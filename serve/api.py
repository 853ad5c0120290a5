"""The public HTTP API (FastAPI), served as the ingress deployment of the Serve app.

``/healthz`` and ``/livez`` need no key (probes); everything under ``/v1`` needs one of the
configured API keys with the route's scope (:mod:`serve.auth`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from deepwatch import __version__
from deepwatch.contracts import SCHEMA_VERSION
from deepwatch.settings import Settings
from serve.auth import require_scope
from serve.context import ApiContext, configure, context
from serve.health import run_checks


def build_api(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; routes find their settings through :func:`serve.context.configure`."""
    app = FastAPI(title="deepwatch", version=__version__)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok", "pid": str(os.getpid())}

    @app.get("/healthz")
    async def healthz(ctx: Annotated[ApiContext, Depends(context)]) -> JSONResponse:
        parts = {"api": {"status": "ok", "version": __version__}} | await run_checks(ctx.checks)
        healthy = all(p["status"] in ("ok", "unconfigured") for p in parts.values())
        body = {"status": "ok" if healthy else "degraded", "parts": parts}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/v1/version", dependencies=[Depends(require_scope("read"))])
    async def version() -> dict[str, Any]:
        return {"version": __version__, "schema_version": SCHEMA_VERSION}

    if settings is not None:
        configure(settings)
    return app
