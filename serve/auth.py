"""API keys with scopes: 401 without a key, 403 with a key that lacks the route's scope.

A key is sent as ``X-API-Key`` or ``Authorization: Bearer``. ``admin`` holds every scope.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException

from deepwatch.settings import API_SCOPES
from serve.context import ApiContext, ApiKey, context


def _matching_key(ctx: ApiContext, given: str) -> ApiKey | None:
    found = None
    # compare against every key without stopping early: timing does not reveal which one matched
    for key in ctx.keys:
        if hmac.compare_digest(given.encode(), key.secret):
            found = key
    return found


class RequireScope:
    """A route dependency: the request carries a configured key holding ``scope``.

    A module-level class, not a closure: Ray Serve pickles the app into each replica, and a closure is
    pickled by value without the module globals its annotations name, while this class travels by
    reference and FastAPI reads its ``__call__`` signature in the replica.
    """

    def __init__(self, scope: str) -> None:
        if scope not in API_SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    def __call__(
        self,
        ctx: Annotated[ApiContext, Depends(context)],
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> ApiKey:
        given = x_api_key
        if given is None and authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if not ctx.keys:
            raise HTTPException(503, "no API keys are configured (DEEPWATCH_API_KEYS)")
        if given is None:
            raise HTTPException(401, "missing API key (X-API-Key or Authorization: Bearer)")
        key = _matching_key(ctx, given)
        if key is None:
            raise HTTPException(403, "invalid API key")
        if self.scope not in key.scopes and "admin" not in key.scopes:
            raise HTTPException(403, f"this key lacks the {self.scope!r} scope")
        return key


def require_scope(scope: str) -> RequireScope:
    return RequireScope(scope)
