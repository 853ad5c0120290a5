"""The API: probes need no key, /v1 does; /healthz reports each part and says which is down."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from deepwatch.contracts import ContractError
from deepwatch.embedded.processes import free_port
from deepwatch.health import start_health_server
from deepwatch.settings import load_settings
from serve.api import build_api


def client(tmp_path: Path, **settings: object) -> TestClient:
    return TestClient(build_api(load_settings(data_dir=tmp_path, **settings)))


def test_v1_needs_a_valid_key(tmp_path: Path) -> None:
    api = client(tmp_path, api_keys="alpha,beta")
    assert api.get("/v1/version").status_code == 401
    assert api.get("/v1/version", headers={"X-API-Key": "gamma"}).status_code == 403
    assert api.get("/v1/version", headers={"X-API-Key": "beta"}).status_code == 200
    assert api.get("/v1/version", headers={"Authorization": "Bearer alpha"}).json()["schema_version"] == 1


def test_no_configured_key_means_no_access(tmp_path: Path) -> None:
    response = client(tmp_path).get("/v1/version", headers={"X-API-Key": ""})
    assert response.status_code == 503
    assert "DEEPWATCH_API_KEYS" in response.json()["detail"]


def test_healthz_reports_every_part_ok(tmp_path: Path, kafka_bootstrap: str) -> None:
    port = free_port()
    server = start_health_server("127.0.0.1", port, lambda: {"status": "ok"})
    try:
        api = client(tmp_path, kafka_bootstrap=kafka_bootstrap, health_crawler_url=f"http://127.0.0.1:{port}/healthz")
        response = api.get("/healthz")
    finally:
        server.shutdown()
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["parts"]) == {"api", "kafka", "index", "store", "crawler"}
    assert all(part["status"] == "ok" for part in body["parts"].values())


def test_healthz_is_503_and_names_the_part_that_is_down(tmp_path: Path) -> None:
    dead = free_port()
    api = client(tmp_path, kafka_bootstrap=f"127.0.0.1:{dead}", health_worker_url=f"http://127.0.0.1:{dead}/healthz")
    response = api.get("/healthz")
    parts = response.json()["parts"]
    assert response.status_code == 503
    assert parts["kafka"]["status"] == "down" and parts["worker"]["status"] == "down"
    assert parts["index"]["status"] == "ok"


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/nope"])
def test_health_server_routes(path: str) -> None:
    port = free_port()
    server = start_health_server("127.0.0.1", port, lambda: {"status": "degraded"})
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}")
    finally:
        server.shutdown()
    assert response.status_code == {"/healthz": 503, "/metrics": 200, "/nope": 404}[path]


def test_healthz_probes_the_real_s3_store(tmp_path: Path, s3_server) -> None:  # type: ignore[no-untyped-def]
    def store_status(secret: str) -> tuple[int, dict]:
        api = client(tmp_path, store_backend="s3", s3_endpoint=s3_server.endpoint, s3_secure=False,
                     s3_bucket="healthz-probe", s3_access_key=s3_server.access_key, s3_secret_key=secret)
        response = api.get("/healthz")
        return response.status_code, response.json()["parts"]["store"]

    code, store = store_status(s3_server.secret_key)
    assert store["status"] == "ok" and store["backend"] == "s3"
    code, store = store_status("wrong-secret")
    assert code == 503 and store["status"] == "down"


def test_scopes_limit_what_a_key_may_do(tmp_path: Path) -> None:
    api = client(tmp_path, api_keys="reader:read+review,scorer:score,boss:admin")
    assert api.get("/v1/version", headers={"X-API-Key": "reader"}).status_code == 200
    assert api.get("/v1/version", headers={"X-API-Key": "boss"}).status_code == 200
    refused = api.get("/v1/version", headers={"X-API-Key": "scorer"})
    assert refused.status_code == 403 and "'read' scope" in refused.json()["detail"]
    # the scope list is not part of the secret
    assert api.get("/v1/version", headers={"X-API-Key": "reader:read+review"}).status_code == 403


def test_unknown_scope_is_a_settings_error_that_hides_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ContractError) as caught:
        load_settings(data_dir=tmp_path, api_keys="s3cret:read+delete")
    assert "delete" in str(caught.value) and "s3cret" not in str(caught.value)
