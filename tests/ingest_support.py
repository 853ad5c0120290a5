"""Shared by the crawler tests: a loopback web server with settable routes, and a publish recorder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deepwatch.contracts import UrlDiscovered
from deepwatch.media.guard import AddressPolicy
from deepwatch.settings import load_settings
from ingest.fetcher import GuardedFetcher

LOOPBACK = AddressPolicy.from_networks(["127.0.0.0/8"])


@dataclass
class Site:
    """A loopback web server; ``routes`` maps a request path (with query) to (status, type, body, headers)."""

    base: str
    routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def put(self, path: str, body: bytes | str, ctype: str = "text/html", status: int = 200, **headers: str) -> None:
        self.routes[path] = (status, ctype, body.encode() if isinstance(body, str) else body, headers)


@pytest.fixture
def site() -> Iterator[Site]:
    holder: list[Site] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            s = holder[0]
            s.hits.append(self.path)
            status, ctype, body, headers = s.routes.get(self.path, (404, "text/plain", b"no", {}))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Site(base=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fetcher() -> Iterator[GuardedFetcher]:
    with GuardedFetcher.from_settings(load_settings(fetch_allow_networks="127.0.0.0/8")) as f:
        yield f


class Published:
    def __init__(self) -> None:
        self.events: list[UrlDiscovered] = []

    def __call__(self, events: list[UrlDiscovered]) -> None:
        self.events += events

    def urls(self) -> list[str]:
        return [e.url for e in self.events]


def rss(*items: tuple[str, str]) -> str:
    body = "".join(
        f'<item><title>{t}</title><link>{link}</link><enclosure url="{link}.mp4" type="video/mp4"/></item>'
        for t, link in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>c</title>{body}</channel></rss>'
