"""Run the sources on their intervals, isolated from each other, and publish what they find.

Each source is polled every ``interval_s`` seconds, stretched or shrunk by up to ``jitter`` (a
fraction) so that many sources do not fetch in lock step. A poll that raises is recorded as that
source's last error and retried at its next turn; it never stops the other sources. New items are
published first and the source's state (cursor, seen ids) is saved only after the publish
succeeded, so a crash in between replays those items (at least once) instead of losing them.
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
from ingest.events import discovered
from ingest.fetcher import Fetcher, GuardedFetcher
from ingest.sources.base import Source, SourceError
from ingest.state import StateStore

if TYPE_CHECKING:
    from ingest.crawler import SourcesFile

log = logging.getLogger(__name__)

Publish = Callable[[list[UrlDiscovered]], Any]


@dataclass
class Scheduled:
    source: Source
    interval_s: float
    jitter: float = 0.1
    next_at: float = 0.0
    polls: int = 0
    failures: int = 0
    found: int = 0
    last_error: str | None = None


class Scheduler:
    def __init__(self, store: StateStore, fetcher: Fetcher, publish: Publish, rng: random.Random | None = None) -> None:
        self.store = store
        self.fetcher = fetcher
        self.publish = publish
        self.rng = rng or random.Random()
        self.entries: dict[str, Scheduled] = {}

    def add(self, source: Source, interval_s: float, jitter: float = 0.1) -> None:
        last_error = self.store.load(source.name).last_error  # visible from the start, not only after a poll
        self.entries[source.name] = Scheduled(source, interval_s, jitter, last_error=last_error)

    def _delay(self, entry: Scheduled) -> float:
        return entry.interval_s * (1 + self.rng.uniform(-entry.jitter, entry.jitter))

    def poll_once(self, name: str) -> list[UrlDiscovered]:
        """Poll one source now; returns what it published. Never raises for the source's own failures."""
        entry = self.entries[name]
        state = self.store.load(name)
        entry.polls += 1
        try:
            result = entry.source.poll(state, self.fetcher)
            events = []
            for item in result.found:
                try:
                    events.append(discovered(item.url, name, item.hints))
                except Exception as exc:  # one bad item is dropped, not the poll
                    result.dropped.append(f"{item.url}: {exc}")
            if events:
                self.publish(events)
            for reason in result.dropped:
                log.debug("source %s dropped %s", name, reason)
            new_state = result.state.model_copy(update={"last_error": None, "last_poll_at": time.time()})
            entry.last_error = None
            entry.found += len(events)
        except Exception as exc:  # isolation: any failure stays inside this source
            entry.failures += 1
            entry.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("source %s failed: %s", name, entry.last_error)
            new_state = state.model_copy(update={"last_error": entry.last_error, "last_poll_at": time.time()})
            events = []
        try:
            self.store.save(name, new_state)
        except OSError as exc:
            entry.last_error = f"cannot save state: {exc}"
            log.error("source %s: %s", name, entry.last_error)
        return events

    def run(self, stop: threading.Event) -> None:
        """Poll each source when it is due until ``stop`` is set (blocks)."""
        now = time.monotonic()
        for entry in self.entries.values():
            # spread the first polls too, so that a restart does not fetch everything at once
            entry.next_at = now + self.rng.uniform(0, entry.jitter) * entry.interval_s
        if not self.entries:
            stop.wait()  # no sources: idle until told to stop
            return
        while not stop.is_set():
            name, entry = min(self.entries.items(), key=lambda kv: kv[1].next_at)
            if stop.wait(max(0.0, entry.next_at - time.monotonic())):
                break
            self.poll_once(name)
            entry.next_at = time.monotonic() + self._delay(entry)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per source: polls, failures, items found and the last error (None after a good poll)."""
        return {name: {"polls": e.polls, "failures": e.failures, "found": e.found, "last_error": e.last_error}
                for name, e in self.entries.items()}


def scheduler_for(settings: Settings, config: SourcesFile, publish: Publish) -> Scheduler:
    """A scheduler over every configured source, its state in ``<data_dir>/crawler``, fetching through the guard.

    Bad options are a startup error naming the source (like an unknown kind), not a source failure:
    a misconfigured source would otherwise fail quietly on every poll. Close ``scheduler.fetcher`` when done.
    """
    from ingest.sources import build

    fetcher = GuardedFetcher.from_settings(settings)
    scheduler = Scheduler(StateStore.in_data_dir(settings.data_dir), fetcher, publish)
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, entry in enumerate(config.sources):
        if entry.name in names:  # two sources would share (and overwrite) one state file
            problems.append((f"sources.{i}.name", f"duplicate source name {entry.name!r}"))
            continue
        names.add(entry.name)
        try:
            scheduler.add(build(entry), entry.interval_s, entry.jitter)
        except ContractError as exc:
            problems += [(f"sources.{i}.options.{field}", message) for field, message in exc.problems]
        except SourceError as exc:
            problems.append((f"sources.{i}.options", str(exc)))
    if problems:
        fetcher.close()
        raise ContractError("SourcesFile", problems)
    return scheduler
