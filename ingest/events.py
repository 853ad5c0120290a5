"""Turn discovered URLs into validated ``UrlDiscovered`` events (pure, no I/O).

:func:`discovered` builds one event; :func:`discovered_batch` builds a poll's worth, which is the hot
path of a crawler: it reuses the canonical URL a source already computed (the id of a
:class:`~ingest.sources.base.Found`), one discovery time for the whole poll, trace ids cut from one
call to the OS's random source and the platform looked up once per origin. Every event is still
validated against the contract, one at a time, so that one bad item is dropped alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache

from deepwatch.contracts import Hints, UrlDiscovered, utcnow
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


def discovered_batch(
    items: Iterable[tuple[str, str | None, Hints | None]], source: str
) -> tuple[list[UrlDiscovered], list[str]]:
    """Events for ``(url, canonical or None, hints)`` items, and a reason for each item refused."""
    items = list(items)
    at = utcnow()  # one poll, one discovery time
    ids = os.urandom(16 * len(items)).hex()
    events, refused = [], []
    for i, (url, canonical, hints) in enumerate(items):
        try:
            trace_id = ids[32 * i : 32 * i + 32]
            events.append(discovered(url, source, hints, canonical=canonical, at=at, trace_id=trace_id))
        except Exception as exc:  # one bad item is dropped, not the batch
            refused.append(f"{url}: {exc}")
    return events, refused
