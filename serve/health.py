"""The API's ``/healthz`` probes: one per part the API depends on or reports on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from deepwatch.embedded.broker import kafka_reachable
from deepwatch.settings import Settings
from storage.index import SearchIndex
from storage.objects import ObjectStore

CHECK_TIMEOUT_S = 3.0

Check = Callable[[], Awaitable[dict[str, Any]]]


def health_checks(
    settings: Settings, open_index: Callable[[], SearchIndex], open_store: Callable[[], ObjectStore]
) -> dict[str, Check]:
    """``open_index`` and ``open_store`` give the API's own (opened once, kept): a probe every few seconds must not
    re-create the schema or the bucket, and a failed open is retried at the next probe."""

    def probe_index() -> dict[str, Any]:
        open_index().get("0" * 64)  # one real lookup: the backend answers, not only exists
        return {"status": "ok", "backend": settings.index_backend}

    def probe_store() -> dict[str, Any]:
        opened = open_store()
        opened.exists("healthz/probe")
        return {"status": "ok", "backend": settings.store_backend, "location": opened.location}

    async def kafka() -> dict[str, Any]:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            return {"status": "unconfigured"}
        ok = await asyncio.to_thread(kafka_reachable, bootstrap, CHECK_TIMEOUT_S - 0.5)
        return {"status": "ok" if ok else "down", "bootstrap": bootstrap}

    async def index() -> dict[str, Any]:
        return await asyncio.to_thread(probe_index)

    async def store() -> dict[str, Any]:
        return await asyncio.to_thread(probe_store)

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
