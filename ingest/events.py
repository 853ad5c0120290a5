"""Turn discovered URLs into validated ``UrlDiscovered`` events (pure, no I/O).

:func:`discovered` builds one event (it lives in :mod:`deepwatch.url_events`, shared with the API);
:func:`discovered_batch` builds a poll's worth, which is the hot path of a crawler: it reuses the
canonical URL a source already computed (the id of a :class:`~ingest.sources.base.Found`), one
discovery time for the whole poll, trace ids cut from one call to the OS's random source and the
platform looked up once per origin. Every event is still validated against the contract, one at a
time, so that one bad item is dropped alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from deepwatch.contracts import Hints, UrlDiscovered, utcnow
from deepwatch.url_events import discovered

__all__ = ["discovered", "discovered_batch"]  # discovered: bench/ingest.py imports it from here


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
