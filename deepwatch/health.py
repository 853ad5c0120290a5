"""A tiny HTTP server for a process's ``/healthz`` and Prometheus ``/metrics``.

The crawler uses it; the worker has Faust's web server and the API its own routes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def start_health_server(host: str, port: int, status: Callable[[], dict[str, Any]]) -> ThreadingHTTPServer:
    """Serve ``status()`` at /healthz (200 when its "status" is "ok", else 503) and /metrics."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                body_dict = status()
                code = 200 if body_dict.get("status") == "ok" else 503
                self._send(code, "application/json", json.dumps(body_dict).encode())
            elif self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            else:
                self._send(404, "application/json", b'{"error": "not found"}')

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: stay quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
