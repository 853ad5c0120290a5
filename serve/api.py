"""The public HTTP API (FastAPI), served as the ingress deployment of the Serve app.

``/healthz`` and ``/livez`` need no key (probes); everything under ``/v1`` needs one of the
configured API keys, sent as ``X-API-Key`` or ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse

from deepwatch import __version__
from deepwatch.contracts import SCHEMA_VERSION
from deepwatch.embedded.broker import kafka_reachable
from deepwatch.settings import Settings
from storage.index import SearchIndex, open_index
from storage.objects import ObjectStore, open_object_store

CHECK_TIMEOUT_S = 3.0

Check = Callable[[], Awaitable[dict[str, Any]]]


class _Backends:
    """The index and store, opened on first use and kept: a probe every few seconds must not
    re-create the schema or the bucket each time. A failed open is retried at the next probe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._index: SearchIndex | None = None
        self._store: ObjectStore | None = None

    def probe_index(self) -> dict[str, Any]:
        if self._index is None:
            self._index = open_index(self.settings, long_lived=True)
        self._index.get("0" * 64)  # one real lookup: the backend answers, not only exists
        return {"status": "ok", "backend": self.settings.index_backend}

    def probe_store(self) -> dict[str, Any]:
        if self._store is None:
            self._store = open_object_store(self.settings)
        self._store.exists("healthz/probe")
        return {"status": "ok", "backend": self.settings.store_backend, "location": self._store.location}


def health_checks(settings: Settings) -> dict[str, Check]:
    """One probe per part the API depends on or reports on."""
    backends = _Backends(settings)

    async def kafka() -> dict[str, Any]:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            return {"status": "unconfigured"}
        ok = await asyncio.to_thread(kafka_reachable, bootstrap, CHECK_TIMEOUT_S - 0.5)
        return {"status": "ok" if ok else "down", "bootstrap": bootstrap}

    async def index() -> dict[str, Any]:
        return await asyncio.to_thread(backends.probe_index)

    async def store() -> dict[str, Any]:
        return await asyncio.to_thread(backends.probe_store)

    checks: dict[str, Check] = {"kafka": kafka, "index": index, "store": store}
    for part, url in (("worker", settings.health_worker_url), ("crawler", settings.health_crawler_url)):
        if url:
            checks[part] = (lambda u: lambda: _http_ok(u))(url)
    return checks


async def _http_ok(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S - 0.5) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "ok" if response.status_code == 200 else "down", "http_status": response.status_code}


async def run_checks(checks: dict[str, Check]) -> dict[str, dict[str, Any]]:
    async def guarded(check: Check) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return {"status": "down", "error": "timeout"}
        except Exception as exc:  # a probe must report, never take /healthz down with it
            return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}

    names = list(checks)
    results = await asyncio.gather(*(guarded(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))


class ApiContext:
    """What the routes need, built once per process from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.checks = health_checks(settings)
        self.keys = [k.get_secret_value().encode() for k in settings.api_keys]


# One API per process. Kept here rather than in ``app.state`` because Ray Serve pickles the FastAPI
# app into each replica before the replica's constructor runs, while functions of this module are
# pickled by reference and so see the replica's own copy of this variable.
_context: ApiContext | None = None


def context() -> ApiContext:
    if _context is None:
        raise HTTPException(503, "the API is starting")
    return _context


def configure(settings: Settings) -> ApiContext:
    global _context
    _context = ApiContext(settings)
    return _context


def require_key(
    ctx: Annotated[ApiContext, Depends(context)],
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    given = x_api_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not ctx.keys:
        raise HTTPException(503, "no API keys are configured (DEEPWATCH_API_KEYS)")
    if given is None:
        raise HTTPException(401, "missing API key (X-API-Key or Authorization: Bearer)")
    # compare_digest against every key: timing does not reveal which prefix matched
    if not any(hmac.compare_digest(given.encode(), k) for k in ctx.keys):
        raise HTTPException(403, "invalid API key")


def build_api(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; routes find their settings through :func:`configure`."""
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

    @app.get("/v1/version", dependencies=[Depends(require_key)])
    async def version() -> dict[str, Any]:
        return {"version": __version__, "schema_version": SCHEMA_VERSION}

    if settings is not None:
        configure(settings)
    return app
