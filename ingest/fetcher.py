"""A small guarded HTTP GET for crawlers: feeds, listings and pages, never media.

Every request — the first and each redirect — goes through a :class:`GuardProxy`, the same SSRF guard
that media fetching uses: the proxy resolves the name, checks every address and connects to a checked
address itself, so a name that later re-resolves to a private address (DNS rebinding) gains nothing.
Redirects are followed here, one proxied request per hop, up to ``max_redirects``. Bodies are capped at
``max_bytes`` while streaming. Failures are the typed errors of :mod:`deepwatch.media.errors`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from deepwatch.backoff import retry_after_seconds
from deepwatch.media.errors import (
    Blocked,
    Forbidden,
    MediaError,
    NotFound,
    Timeout,
    TooLarge,
    Transient,
    Unsupported,
)
from deepwatch.media.guard import AddressPolicy
from deepwatch.media.proxy import GuardProxy
from deepwatch.settings import Settings

USER_AGENT = "deepwatch-crawler/1 (+https://github.com/deepwatch)"
REDIRECTS = {301, 302, 303, 307, 308}
T = TypeVar("T")


@dataclass(frozen=True)
class Response:
    url: str  # after redirects: relative links in the body resolve against this
    status: int
    content_type: str
    body: bytes


class Fetcher(Protocol):
    # the guard policy travels with the fetcher, so a source that needs its own HTTP client (yt-dlp)
    # still goes through the same guard
    policy: AddressPolicy
    max_redirects: int

    def get(self, url: str) -> Response: ...

    def paced(self, url: str, request: Callable[[], T]) -> T:
        """Run ``request`` (which talks to ``url``'s host with its own client, as yt-dlp does) under the
        same pacing and retries as :meth:`get`."""
        ...


class GuardedFetcher:
    """``get(url)``: a 2xx body or a typed error (Blocked, NotFound, Forbidden, TooLarge, Timeout, Transient…)."""

    def __init__(self, policy: AddressPolicy, *, timeout_s: float = 30.0, max_bytes: int = 10 * 1024 * 1024,
                 max_redirects: int = 5, user_agent: str = USER_AGENT) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        # One proxy for the fetcher's life: starting and stopping one per request costs ~0.5 s (its
        # serve loop polls for shutdown). Requests are serialised so its refusals belong to this request.
        self._proxy: GuardProxy | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, max_bytes: int = 10 * 1024 * 1024) -> GuardedFetcher:
        return cls(AddressPolicy.from_networks(settings.fetch_allow_networks),
                   timeout_s=min(settings.fetch_timeout_s, 60.0), max_bytes=min(max_bytes, settings.fetch_max_bytes),
                   max_redirects=settings.fetch_max_redirects)

    def paced(self, url: str, request: Callable[[], T]) -> T:
        return request()  # no pacing here: that is PoliteFetcher's job

    def close(self) -> None:
        with self._lock:
            if self._proxy is not None:
                self._proxy.close()
                self._proxy = None

    def __enter__(self) -> GuardedFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str) -> Response:
        with self._lock:
            if self._proxy is None:
                self._proxy = GuardProxy(self.policy, timeout_s=self.timeout_s).__enter__()
            self._proxy.refusals.clear()
            return self._get(url, self._proxy)

    def _get(self, url: str, proxy: GuardProxy) -> Response:
        deadline = time.monotonic() + self.timeout_s
        # a new client per fetch: the proxy serves one request per connection, so there is nothing to keep alive
        with httpx.Client(
            proxy=proxy.url, trust_env=False, follow_redirects=False, timeout=self.timeout_s,
            headers={"User-Agent": self.user_agent},
        ) as client:
            for _hop in range(self.max_redirects + 1):
                _check_scheme(url)
                try:
                    status, headers, body = self._one(client, url, deadline)
                except httpx.TimeoutException as exc:
                    raise Timeout(f"timed out fetching {url}: {exc}") from None
                except httpx.HTTPError as exc:
                    if proxy.refusals:
                        raise Blocked(proxy.refusals[0]) from None
                    raise Transient(f"fetching {url} failed: {exc}") from None
                if proxy.refusals:  # the proxy answered 403 for a refused address
                    raise Blocked(proxy.refusals[0])
                if status in REDIRECTS and "location" in headers:
                    url = urljoin(url, headers["location"])
                    continue
                _check_status(url, status, headers.get("retry-after"))
                return Response(url=url, status=status, content_type=headers.get("content-type", ""), body=body)
        raise Blocked(f"too many redirects (the limit is {self.max_redirects}, fetch_max_redirects): {url}")

    def _one(self, client: httpx.Client, url: str, deadline: float) -> tuple[int, httpx.Headers, bytes]:
        with client.stream("GET", url) as resp:
            if resp.status_code in REDIRECTS or resp.status_code >= 300:
                return resp.status_code, resp.headers, b""  # the body of an error page is not needed
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise TooLarge(f"{url}: {declared} bytes declared, the limit is {self.max_bytes}")
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise TooLarge(f"{url}: more than {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise Timeout(f"{url}: not complete within {self.timeout_s}s")
                chunks.append(chunk)
            return resp.status_code, resp.headers, b"".join(chunks)


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Unsupported(f"only http and https are fetched, not {scheme or 'no scheme'!r}: {url!r}")


def _check_status(url: str, status: int, retry_after: str | None = None) -> None:
    if 200 <= status < 300:
        return
    if status in (404, 410):
        raise NotFound(f"{url}: HTTP {status}")
    if status in (401, 403):
        raise Forbidden(f"{url}: HTTP {status}")
    if status == 429 or status >= 500:
        wait = retry_after_seconds(retry_after) if status in (429, 503) else None
        raise Transient(f"{url}: HTTP {status}" + (f" (Retry-After {wait:.0f} s)" if wait is not None else ""), wait)
    raise MediaError(f"{url}: HTTP {status}")
