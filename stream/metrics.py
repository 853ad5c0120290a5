"""The worker's Prometheus metrics, served at ``/metrics`` on its web port.

A registry of its own per pipeline rather than the process-global one, so that two apps in one
process (tests, the benchmark) never count into each other.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "StreamMetrics"]

# Fetches and scorings take from tens of milliseconds (a cached image) to minutes (a long video).
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class StreamMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "deepwatch_stream_events", "events that entered a stage", ["stage"], registry=self.registry
        )
        self.dedup = Counter(
            "deepwatch_stream_dedup_hits",
            "events resolved by deduplication, per class (url, exact, near) and new media scored as a variant",
            ["dedup_class"],
            registry=self.registry,
        )
        self.fetch_seconds = Histogram(
            "deepwatch_stream_fetch_seconds", "download time per fetched URL", buckets=_SLOW_BUCKETS,
            registry=self.registry,
        )
        self.score_seconds = Histogram(
            "deepwatch_stream_score_seconds", "scoring API time per media item (retries included)",
            buckets=_SLOW_BUCKETS, registry=self.registry,
        )
        self.dead_letters = Counter(
            "deepwatch_stream_dead_letters", "events sent to the DLQ, per stage", ["stage"], registry=self.registry
        )
        self.retries = Counter(
            "deepwatch_stream_retries", "transient failures retried, per stage", ["stage"], registry=self.registry
        )
        self.lag = Gauge(
            "deepwatch_stream_consumer_lag", "messages behind the partition's end, at the last event",
            ["partition"], registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
