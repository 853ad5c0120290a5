"""Run the sources on their intervals, isolated from each other, and publish what they find.

Each source is polled every ``interval_s`` seconds, stretched or shrunk by up to ``jitter`` (a
fraction) so that many sources do not fetch in lock step. A poll that raises is recorded as that
source's last error and never stops the other sources; a source that keeps failing is polled later
and later (its interval doubles per failure in a row, up to ``crawler_backoff_max_s``) and is back
on its interval after one good poll. New items are published first and the source's state (cursor,
seen ids) is saved only after the publish succeeded, so a crash in between replays those items (at
least once) instead of losing them. The saved state also carries the counts and times that
``deepwatch crawl --status`` shows, so a restart resumes a failing source's backoff too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepwatch.contracts import ContractError, UrlDiscovered
from deepwatch.settings import Settings
from ingest.backoff import poll_delay, source_backoff
from ingest.events import discovered_batch
from ingest.fetcher import Fetcher
from ingest.polite import PoliteFetcher
from ingest.robots import RobotsCache
from ingest.sources.base import Source, SourceContext, SourceError
from ingest.state import SourceState, StateStore
from ingest.status import describe

if TYPE_CHECKING:
    from ingest.crawler import SourcesFile

log = logging.getLogger(__name__)

Publish = Callable[[list[UrlDiscovered]], Any]

# the fields of SourceState that the scheduler keeps in memory and writes back after every poll
RECORDED = ("last_error", "last_poll_at", "last_success_at", "next_poll_at", "backoff_s", "consecutive_failures",
            "polls", "failures", "discovered", "published", "disallowed")


@dataclass
class Scheduled:
    source: Source
    interval_s: float
    jitter: float = 0.1
    next_at: float = 0.0  # on the scheduler's (monotonic) clock
    # the rest mirrors SourceState's fields of the same names (times are Unix seconds)
    last_error: str | None = None
    last_poll_at: float | None = None
    last_success_at: float | None = None
    next_poll_at: float | None = None
    backoff_s: float = 0.0
    consecutive_failures: int = 0
    polls: int = 0
    failures: int = 0
    discovered: int = 0  # new items polls found (found again after a failed publish)
    published: int = 0  # events the broker acknowledged
    disallowed: int = 0  # URLs robots.txt kept the crawler from

    def recorded(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RECORDED}


class Scheduler:
    def __init__(
        self,
        store: StateStore,
        fetcher: Fetcher,
        publish: Publish,
        rng: random.Random | None = None,
        *,
        backoff_max_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.publish = publish
        self.rng = rng or random.Random()
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.wall = wall
        self.entries: dict[str, Scheduled] = {}

    def add(self, source: Source, interval_s: float, jitter: float = 0.1) -> None:
        # the last error, counts and backoff are visible from the start, not only after a poll
        saved = self.store.load(source.name)
        self.entries[source.name] = Scheduled(source, interval_s, jitter,
                                              **{name: getattr(saved, name) for name in RECORDED})

    def poll_once(self, name: str) -> list[UrlDiscovered]:
        """Poll one source now and schedule its next poll; returns what it published.

        Never raises for the source's own failures.
        """
        entry = self.entries[name]
        state = self.store.load(name)
        entry.polls += 1
        entry.last_poll_at = self.wall()
        base: SourceState = state
        try:
            result = entry.source.poll(state, self.fetcher)
            entry.discovered += len(result.found)
            entry.disallowed += len(result.disallowed)
            events, refused = discovered_batch(((f.url, f.id, f.hints) for f in result.found), name)
            result.dropped += refused
            if events:
                self.publish(events)
            entry.published += len(events)
            for reason in result.dropped:
                log.debug("source %s dropped %s", name, reason)
            entry.last_error = None
            entry.consecutive_failures = 0
            entry.last_success_at = self.wall()
            base = result.state
        except Exception as exc:  # isolation: any failure stays inside this source
            entry.failures += 1
            entry.consecutive_failures += 1
            entry.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("source %s failed (%d in a row): %s", name, entry.consecutive_failures, entry.last_error)
            events = []
        self._reschedule(entry)
        try:
            self.store.save(name, base.model_copy(update=entry.recorded()))
        except OSError as exc:
            entry.last_error = f"cannot save state: {exc}"
            log.error("source %s: %s", name, entry.last_error)
        return events

    def _reschedule(self, entry: Scheduled) -> None:
        entry.backoff_s = source_backoff(entry.interval_s, entry.consecutive_failures, self.backoff_max_s)
        self._due_in(entry, poll_delay(entry.interval_s, entry.jitter, entry.backoff_s, self.rng.uniform(-1, 1)))

    def _due_in(self, entry: Scheduled, seconds: float) -> None:
        entry.next_at = self.clock() + seconds
        entry.next_poll_at = self.wall() + seconds

    def run(self, stop: threading.Event) -> None:
        """Poll each source when it is due until ``stop`` is set (blocks)."""
        for entry in self.entries.values():
            # spread the first polls too, so that a restart does not fetch everything at once
            delay = self.rng.uniform(0, entry.jitter) * entry.interval_s
            if entry.consecutive_failures and entry.next_poll_at is not None:
                delay = max(delay, entry.next_poll_at - self.wall())  # a restart does not cut a backoff short
            self._due_in(entry, delay)
        if not self.entries:
            stop.wait()  # no sources: idle until told to stop
            return
        while not stop.is_set():
            name, entry = min(self.entries.items(), key=lambda kv: kv[1].next_at)
            if stop.wait(max(0.0, entry.next_at - self.clock())):
                break
            self.poll_once(name)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per source: counts, times, backoff and the last error (None after a good poll)."""
        return {name: describe(e.recorded(), e.interval_s) for name, e in self.entries.items()}


def scheduler_for(
    settings: Settings, config: SourcesFile, publish: Publish, stop: threading.Event | None = None
) -> Scheduler:
    """A scheduler over every configured source, its state in ``<data_dir>/crawler``, fetching through the
    guard, paced per host and retrying (:class:`~ingest.polite.PoliteFetcher`, whose waits end when ``stop``
    is set), with one robots.txt cache for all page sources when ``crawler_robots`` is on.

    Bad options are a startup error naming the source (like an unknown kind), not a source failure:
    a misconfigured source would otherwise fail quietly on every poll. Close ``scheduler.fetcher`` when done.
    """
    from ingest.sources import build

    fetcher = PoliteFetcher.from_settings(settings, stop)
    scheduler = Scheduler(StateStore.in_data_dir(settings.data_dir), fetcher, publish,
                          backoff_max_s=settings.crawler_backoff_max_s)
    robots = RobotsCache(settings.crawler_robots_ttl_s, pace=fetcher.slow_down) if settings.crawler_robots else None
    context = SourceContext(robots=robots)
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, entry in enumerate(config.sources):
        if entry.name in names:  # two sources would share (and overwrite) one state file
            problems.append((f"sources.{i}.name", f"duplicate source name {entry.name!r}"))
            continue
        names.add(entry.name)
        try:
            scheduler.add(build(entry, context), entry.interval_s, entry.jitter)
        except ContractError as exc:
            problems += [(f"sources.{i}.options.{field}", message) for field, message in exc.problems]
        except SourceError as exc:
            problems.append((f"sources.{i}.options", str(exc)))
    if problems:
        fetcher.close()
        raise ContractError("SourcesFile", problems)
    return scheduler
