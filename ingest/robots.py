"""robots.txt for page crawling: fetched through the crawler's own (guarded, paced) fetcher, parsed by
the standard library's :mod:`urllib.robotparser`, and kept per origin for a while.

What an unreadable robots.txt means follows RFC 9309: a 4xx answer (none there, or not for us) allows
everything; a server or network failure disallows everything until the next try, which comes sooner
(``error_ttl_s``) than the refetch of a good file (``ttl_s``). A ``Crawl-delay`` or ``Request-rate``
is passed on to the fetcher's per-host pacing (``pace``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from deepwatch.media.errors import Forbidden, MediaError, NotFound
from ingest.fetcher import USER_AGENT, Fetcher


@dataclass
class _Rules:
    parser: RobotFileParser
    expires: float
    note: str | None = None  # why everything is disallowed, when it is


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]``: robots.txt applies per origin, not per host name."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def min_interval_s(parser: RobotFileParser, user_agent: str) -> float | None:
    """Seconds between two requests that robots.txt asks of ``user_agent`` (the slower of Crawl-delay
    and Request-rate), or None when it asks nothing."""
    asked: list[float] = []
    try:
        delay = parser.crawl_delay(user_agent)
        rate = parser.request_rate(user_agent)
    except (TypeError, ValueError):  # a malformed line is the site's mistake, not a reason to stop
        return None
    if delay is not None:
        asked.append(float(delay))
    if rate is not None and rate.requests > 0:
        asked.append(rate.seconds / rate.requests)
    return max(asked) if asked and max(asked) > 0 else None


def rules_from_text(text: str) -> RobotFileParser:
    parser = RobotFileParser()
    parser.parse(text.splitlines())
    return parser


class RobotsCache:
    """``refusal(url, fetch)``: None when the crawler may fetch ``url``, else why it may not."""

    def __init__(
        self,
        ttl_s: float = 3600.0,
        error_ttl_s: float = 300.0,
        user_agent: str = USER_AGENT,
        clock: Callable[[], float] = time.monotonic,
        max_origins: int = 1000,
        pace: Callable[[str, float], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.error_ttl_s = min(error_ttl_s, ttl_s)
        self.user_agent = user_agent
        self.clock = clock
        self.max_origins = max_origins
        # told (host, seconds between requests) when a robots.txt asks for a Crawl-delay or Request-rate
        self.pace = pace
        self._rules: OrderedDict[str, _Rules] = OrderedDict()
        self.fetches = 0  # robots.txt requests made, so tests and metrics can see the cache work

    def refusal(self, url: str, fetch: Fetcher) -> str | None:
        origin = origin_of(url)
        if origin is None:
            return None  # not a web URL: the fetcher refuses it with a proper error
        rules = self._rules_for(origin, fetch)
        if rules.parser.can_fetch(self.user_agent, url):
            return None
        return rules.note or f"disallowed by {origin}/robots.txt"

    def _rules_for(self, origin: str, fetch: Fetcher) -> _Rules:
        now = self.clock()
        cached = self._rules.get(origin)
        if cached is not None and cached.expires > now:
            self._rules.move_to_end(origin)
            return cached
        rules = self._load(origin, fetch, now)
        interval = min_interval_s(rules.parser, self.user_agent)
        if interval and self.pace is not None:
            self.pace(urlsplit(origin).hostname or "", interval)
        self._rules[origin] = rules
        self._rules.move_to_end(origin)
        while len(self._rules) > self.max_origins:
            self._rules.popitem(last=False)
        return rules

    def _load(self, origin: str, fetch: Fetcher, now: float) -> _Rules:
        self.fetches += 1
        parser = RobotFileParser()
        try:
            resp = fetch.get(f"{origin}/robots.txt")
        except (NotFound, Forbidden):
            parser.allow_all = True
            return _Rules(parser, now + self.ttl_s)
        except MediaError as exc:
            if type(exc) is MediaError:  # any other 4xx (or an odd 3xx): "unavailable", so allowed
                parser.allow_all = True
                return _Rules(parser, now + self.ttl_s)
            parser.disallow_all = True
            return _Rules(
                parser,
                now + self.error_ttl_s,
                f"{origin}/robots.txt unreachable ({type(exc).__name__}: {exc}); nothing fetched there",
            )
        return _Rules(rules_from_text(resp.body.decode("utf-8", errors="replace")), now + self.ttl_s)
