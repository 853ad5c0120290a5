"""Prometheus metrics of the API's own requests, and the ``/metrics`` exposition.

Labelled by the route's *template* (``/v1/media/{media_id}``), never the raw path, so that the
number of series stays bounded whatever paths clients send; unmatched paths share one label.
Everything goes to prometheus-client's default registry, where other modules of the process
(the scoring counter ``deepwatch_media_scored_total``) register theirs.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "deepwatch_api_requests", "HTTP requests the API answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "deepwatch_api_request_seconds",
    "Time from a request's arrival to the end of its response",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UNMATCHED = "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server error middleware answers when the app raises

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = route_label(scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)


def route_label(scope: Scope) -> str:
    """The matched route's template: FastAPI writes its routes into the scope it was given (this one);
    Starlette's own routes (``/openapi.json``, ``/docs``) leave no trace there, but have no parameters,
    so a path equal to one of the app's route paths is its own template."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    path = scope["path"]
    app_routes = getattr(scope.get("app"), "routes", ())
    return path if any(getattr(r, "path", None) == path for r in app_routes) else UNMATCHED


def metrics_response() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
