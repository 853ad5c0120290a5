"""The crawler's fetcher: the guarded fetcher, paced per host and retrying transient failures.

Wraps any :class:`~ingest.fetcher.Fetcher`. Before each attempt it waits for the host's turn
(:class:`~ingest.ratelimit.HostRateLimiter`); an error whose ``retryable`` is true (``Transient``:
connection failures, HTTP 429 and 5xx; ``Timeout``) is retried with capped exponential backoff
(:mod:`ingest.backoff`), and anything else is raised at once. A server's ``Retry-After`` holds back
every request to its host for that long (up to a cap); robots.txt's ``Crawl-delay`` lowers the host's
rate. Clock, sleep and randomness are injected so that tests wait for nothing. Redirect hops inside one
``get`` are paced as one request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from deepwatch.media.errors import MediaError, Transient
from deepwatch.media.guard import AddressPolicy
from deepwatch.settings import Settings
from ingest.backoff import RetryPolicy, retry_delay
from ingest.fetcher import Fetcher, GuardedFetcher, Response
from ingest.ratelimit import HostRateLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")


class PoliteFetcher:
    def __init__(
        self,
        inner: Fetcher,
        limiter: HostRateLimiter,
        retry: RetryPolicy,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.limiter = limiter
        self.retry = retry
        # waiting on the crawler's stop event, not time.sleep, so that SIGTERM ends a backoff at once
        self.stop = stop or threading.Event()
        self.clock = clock
        self._sleep = sleep
        self.rng = rng or random.Random()
        self.retries = 0  # retried attempts, for the metrics
        self.waited_s = 0.0  # time spent waiting for a host's turn, for the metrics

    @classmethod
    def from_settings(cls, settings: Settings, stop: threading.Event | None = None) -> PoliteFetcher:
        return cls(
            GuardedFetcher.from_settings(settings),
            HostRateLimiter(settings.crawler_host_rate, settings.crawler_host_burst),
            RetryPolicy(
                settings.crawler_retries,
                settings.crawler_retry_base_s,
                settings.crawler_retry_max_s,
                settings.crawler_retry_after_max_s,
            ),
            stop=stop,
        )

    # the guard travels with the fetcher (yt-dlp listings use it for their own client)
    @property
    def policy(self) -> AddressPolicy:
        return self.inner.policy

    @property
    def max_redirects(self) -> int:
        return self.inner.max_redirects

    def _wait(self, seconds: float) -> bool:
        """Wait; True when the crawler is stopping and the wait was cut short."""
        if seconds <= 0:
            return self.stop.is_set()
        if self._sleep is not None:
            self._sleep(seconds)
            return self.stop.is_set()
        return self.stop.wait(seconds)

    def get(self, url: str) -> Response:
        return self.paced(url, lambda: self.inner.get(url))

    def paced(self, url: str, request: Callable[[], T]) -> T:
        host = (urlsplit(url).hostname or "").lower()
        for attempt in range(self.retry.retries + 1):
            wait = self.limiter.reserve(host, self.clock())
            self.waited_s += wait
            if self._wait(wait):
                raise MediaError(f"crawler stopping; {url} not fetched")
            try:
                return request()
            except MediaError as exc:
                asked = exc.retry_after_s if isinstance(exc, Transient) else None
                if asked is not None:
                    # every request to the host waits, not only this retry
                    self.limiter.defer(host, asked, self.clock())
                if not exc.retryable or attempt == self.retry.retries or (asked or 0) > self.retry.retry_after_cap_s:
                    raise
                delay = retry_delay(attempt, self.retry, self.rng.random())
                log.info("retrying %s in %.1f s (%s: %s)", url, delay, type(exc).__name__, exc)
                self.retries += 1
                if self._wait(delay):
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def slow_down(self, host: str, min_interval_s: float) -> None:
        """robots.txt's Crawl-delay for ``host``."""
        self.limiter.slow_down(host, min_interval_s, self.clock())

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
