"""What the API's routes share in one process: settings, health probes and the API keys.

Kept in a module variable rather than in ``app.state`` because Ray Serve pickles the FastAPI app
into each replica before the replica's constructor runs, while functions of this module are
pickled by reference and so see the replica's own copy of the variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException

from deepwatch.settings import Settings, split_api_key
from serve.health import Check, health_checks


@dataclass(frozen=True)
class ApiKey:
    secret: bytes
    scopes: frozenset[str]


class ApiContext:
    """Built once per process from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.checks: dict[str, Check] = health_checks(settings)
        self.keys = [
            ApiKey(secret.encode(), scopes)
            for secret, scopes in (split_api_key(k.get_secret_value()) for k in settings.api_keys)
        ]


_context: ApiContext | None = None


def context() -> ApiContext:
    if _context is None:
        raise HTTPException(503, "the API is starting")
    return _context


def configure(settings: Settings) -> ApiContext:
    global _context
    _context = ApiContext(settings)
    return _context
