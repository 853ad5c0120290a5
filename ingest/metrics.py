"""Prometheus metrics of the crawler, read from the scheduler at scrape time.

A collector rather than counters updated in place: the scheduler's entries already hold every count
(carried across restarts by the state files), so nothing can drift apart, and "seconds since the
last success" is computed when Prometheus asks, not when the last poll ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.scheduler import Scheduler


class CrawlerCollector(Collector):
    def __init__(self, scheduler: Scheduler, wall: Callable[[], float] = time.time) -> None:
        self.scheduler = scheduler
        self.wall = wall

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        entries = list(self.scheduler.entries.items())  # a snapshot: the scheduler thread keeps polling
        counters = {
            "discovered": ("deepwatch_crawler_discovered", "New URLs found by polls of the source"),
            "published": ("deepwatch_crawler_published", "URL events of the source acknowledged by Kafka"),
            "failures": ("deepwatch_crawler_errors", "Failed polls of the source"),
            "polls": ("deepwatch_crawler_polls", "Polls of the source"),
            "disallowed": ("deepwatch_crawler_robots_disallowed", "URLs of the source skipped for robots.txt"),
        }
        for field, (name, doc) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["source"])
            for source, entry in entries:
                family.add_metric([source], getattr(entry, field))
            yield family

        now = self.wall()
        since = GaugeMetricFamily(
            "deepwatch_crawler_seconds_since_last_success",
            "Seconds since the source's last good poll (absent until it has had one)",
            labels=["source"],
        )
        last = GaugeMetricFamily(
            "deepwatch_crawler_last_success_timestamp_seconds",
            "Unix time of the source's last good poll",
            labels=["source"],
        )
        failing = GaugeMetricFamily(
            "deepwatch_crawler_consecutive_failures",
            "Failed polls of the source since its last good one",
            labels=["source"],
        )
        backoff = GaugeMetricFamily(
            "deepwatch_crawler_backoff_seconds",
            "Extra delay before the source's next poll after failures",
            labels=["source"],
        )
        for source, entry in entries:
            if entry.last_success_at is not None:
                since.add_metric([source], max(0.0, now - entry.last_success_at))
                last.add_metric([source], entry.last_success_at)
            failing.add_metric([source], entry.consecutive_failures)
            backoff.add_metric([source], entry.backoff_s)
        yield from (since, last, failing, backoff)

        fetcher = self.scheduler.fetcher
        retries = CounterMetricFamily("deepwatch_crawler_fetch_retries", "Fetches retried after a transient failure")
        retries.add_metric([], getattr(fetcher, "retries", 0))
        waited = CounterMetricFamily(
            "deepwatch_crawler_rate_limit_wait_seconds", "Time spent waiting for a host's turn (per-host rate limit)"
        )
        waited.add_metric([], getattr(fetcher, "waited_s", 0.0))
        yield from (retries, waited)
