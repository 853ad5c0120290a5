"""A TestClient over the real API app with one module's settings, for the API test modules.

The API context is process-wide (:mod:`serve.context`), and test modules each build their own app; the
``use`` method puts a module's settings back before each of its tests (call it from an autouse fixture).
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

from deepwatch.settings import Settings
from serve import context as api_context
from serve.api import build_api


class Api:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = TestClient(build_api(settings))

    def use(self) -> None:
        current = api_context.configured()
        if current is None or current.settings is not self.settings:
            api_context.configure(self.settings)

    def get(self, path: str, key: str | None, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers={"X-API-Key": key} if key else {})

    def post(self, path: str, key: str | None, body: Any) -> httpx.Response:
        return self.client.post(path, json=body, headers={"X-API-Key": key} if key else {})
