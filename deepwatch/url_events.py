"""One validated ``UrlDiscovered`` event from a URL (pure, no I/O).

Shared by everything that puts URLs into the stream: the crawler (``ingest.events`` builds a poll's
worth with it), ``deepwatch submit`` and the API's ``POST /v1/submit``; so a URL gets the same
canonical form and platform whoever submits it.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from deepwatch.contracts import Hints, UrlDiscovered
from deepwatch.media.urls import canonical_url, platform_of


@lru_cache(maxsize=4096)
def _platform_of_origin(origin: str) -> str:
    return platform_of(origin + "/")


def platform_of_canonical(canonical: str) -> str:
    """``platform_of`` for a canonical URL, cached per origin: the platform depends on the host alone,
    and a canonical URL always has a path, so its origin ends at the first "/" after "://"."""
    start = canonical.find("://")
    end = canonical.find("/", start + 3) if start >= 0 else -1
    if end < 0:
        return platform_of(canonical)
    return _platform_of_origin(canonical[:end])


def discovered(
    url: str,
    source: str,
    hints: Hints | None = None,
    *,
    canonical: str | None = None,
    at: datetime | None = None,
    trace_id: str | None = None,
) -> UrlDiscovered:
    """Raises ``Unsupported`` for non-http(s) input and ``ContractError``/``ValueError`` for invalid fields.

    ``canonical`` must be ``canonical_url(url)`` when given (sources have it already).
    """
    canonical = canonical or canonical_url(url)
    extra: dict[str, object] = {}
    if at is not None:
        extra["discovered_at"] = at
    if trace_id is not None:
        extra["trace_id"] = trace_id
    return UrlDiscovered(
        url=url.strip(),
        canonical_url=canonical,
        source=source,
        platform=platform_of_canonical(canonical),
        hints=hints,
        **extra,
    )
