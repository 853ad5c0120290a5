"""The API deployed on a real local Ray Serve, as `deepwatch serve` and KubeRay run it."""

from __future__ import annotations

import httpx


def test_serve_app_answers_health_and_keyed_requests(serve_app: dict[str, str]) -> None:
    health = httpx.get(f"{serve_app['url']}/healthz", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["parts"]["kafka"]["status"] == "ok"
    assert httpx.get(f"{serve_app['url']}/v1/version", timeout=10).status_code == 401
    keyed = httpx.get(f"{serve_app['url']}/v1/version", headers={"X-API-Key": serve_app["key"]}, timeout=10)
    assert keyed.status_code == 200
