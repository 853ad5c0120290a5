"""Per-host pacing of crawler requests: one token bucket per host name.

Pure: nothing here sleeps or reads a clock. The caller passes the current time and gets back how
long to wait before it may send; the token is taken at once (on credit), so a second caller for the
same host queues behind the first instead of both waiting the same short time and arriving together.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # most tokens held: requests allowed back to back after a quiet spell
    tokens: float
    updated: float
    not_before: float = 0.0  # a server's Retry-After: nothing is sent to the host before this time

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait until it is really there (0 when it already is)."""
        elapsed = max(0.0, now - self.updated)  # a clock that steps back must not mint tokens
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class HostRateLimiter:
    """``reserve(host, now)``: seconds to wait before the next request to ``host``.

    ``rate`` is requests per second per host (0 turns pacing off, except for a host that asked to be
    slowed down or deferred). Buckets of the least recently used
    hosts are forgotten past ``max_hosts``, so a crawl over many domains cannot grow this without end;
    a forgotten host starts again with a full bucket, which is what a long-idle host would have anyway.
    """

    def __init__(self, rate: float, burst: int = 1, max_hosts: int = 10_000) -> None:
        if rate < 0 or burst < 1 or max_hosts < 1:
            raise ValueError("rate must be >= 0, burst and max_hosts >= 1")
        self.rate = rate
        self.burst = burst
        self.max_hosts = max_hosts
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def reserve(self, host: str, now: float) -> float:
        bucket = self._bucket(host, now)
        wait = max(0.0, bucket.not_before - now)
        if bucket.rate == 0:
            return wait
        return max(wait, bucket.reserve(now))

    def slow_down(self, host: str, min_interval_s: float, now: float) -> None:
        """At most one request per ``min_interval_s`` to ``host`` (robots.txt's Crawl-delay); never speeds up."""
        if min_interval_s <= 0:
            return
        bucket = self._bucket(host, now)
        rate = 1.0 / min_interval_s
        if bucket.rate == 0 or rate < bucket.rate:
            bucket.rate, bucket.burst = rate, 1.0
            bucket.tokens = min(bucket.tokens, 1.0)

    def defer(self, host: str, seconds: float, now: float) -> None:
        """No request to ``host`` for ``seconds`` (the server's Retry-After), whatever the bucket holds."""
        bucket = self._bucket(host, now)
        bucket.not_before = max(bucket.not_before, now + seconds)

    def _bucket(self, host: str, now: float) -> TokenBucket:
        bucket = self._buckets.pop(host, None) or TokenBucket(self.rate, self.burst, self.burst, now)
        self._buckets[host] = bucket  # most recently used last
        while len(self._buckets) > self.max_hosts:
            self._buckets.popitem(last=False)
        return bucket
