"""What the API's routes share in one process: settings, health probes, the API keys, and the index, object
store and Kafka publisher, each opened on first use and kept.

Kept in a module variable rather than in ``app.state`` because Ray Serve pickles the FastAPI app
into each replica before the replica's constructor runs, while functions of this module are
pickled by reference and so see the replica's own copy of the variable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException

from deepwatch.settings import Settings, parse_api_key
from serve.health import Check, health_checks

if TYPE_CHECKING:
    from deepwatch.publisher import EventPublisher
    from storage.index import SearchIndex
    from storage.objects import ObjectStore

# How long a submit waits for Kafka: an API caller would rather get 503 than hang.
PUBLISH_TIMEOUT_S = 5.0
# Media whose face crops are kept: decoding a video again costs seconds, and a media page asks for
# each of its faces in turn.
FACE_CROPS_KEPT = 8


@dataclass(frozen=True)
class ApiKey:
    secret: bytes
    scopes: frozenset[str]
    name: str  # reviews are recorded under it; never the secret


class ApiContext:
    """Built once per process from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = [
            ApiKey(e.secret.encode(), e.scopes, e.name)
            for e in (parse_api_key(k.get_secret_value()) for k in settings.api_keys)
        ]
        self._lock = threading.Lock()
        self._index: SearchIndex | None = None
        self._store: ObjectStore | None = None
        self._publisher: EventPublisher | None = None
        self._crops: OrderedDict[Hashable, list[bytes | None]] = OrderedDict()
        self._crops_lock = threading.Lock()  # one decoding at a time: the page's parallel requests share it
        self.checks: dict[str, Check] = health_checks(settings, self.index, self.store)

    def index(self) -> SearchIndex:
        with self._lock:
            if self._index is None:
                from storage.index import open_index

                self._index = open_index(self.settings, long_lived=True)
            return self._index

    def store(self) -> ObjectStore:
        with self._lock:
            if self._store is None:
                from storage.objects import open_object_store

                self._store = open_object_store(self.settings)
            return self._store

    def face_crops(self, key: Hashable, compute: Callable[[], list[bytes | None]]) -> list[bytes | None]:
        """The face crops under ``key`` (a record's id and faces), computed on the first request."""
        with self._crops_lock:
            crops = self._crops.get(key)
            if crops is None:
                crops = self._crops[key] = compute()
                while len(self._crops) > FACE_CROPS_KEPT:
                    self._crops.popitem(last=False)
            self._crops.move_to_end(key)
            return crops

    def publisher(self) -> EventPublisher:
        """Raises :class:`deepwatch.publisher.PublishError` when Kafka is unset or unreachable; the next call
        tries again."""
        from deepwatch.publisher import EventPublisher, PublishError

        if not self.settings.kafka_bootstrap:
            raise PublishError("no Kafka is configured (DEEPWATCH_KAFKA_BOOTSTRAP)")
        with self._lock:
            if self._publisher is None:
                self._publisher = EventPublisher(
                    self.settings.kafka_bootstrap,
                    max_block_s=min(PUBLISH_TIMEOUT_S, self.settings.kafka_publish_timeout_s),
                    client_id="deepwatch-api",
                )
            return self._publisher

    def close(self) -> None:
        with self._lock:
            index, publisher, self._index, self._publisher, self._store = self._index, self._publisher, None, None, None
        if index is not None:
            index.close()
        if publisher is not None:
            publisher.close()


_context: ApiContext | None = None


def context() -> ApiContext:
    if _context is None:
        raise HTTPException(503, "the API is starting")
    return _context


def configured() -> ApiContext | None:
    """The context, or None before :func:`configure` (no 503 raised: for middleware)."""
    return _context


def configure(settings: Settings) -> ApiContext:
    global _context
    previous, _context = _context, ApiContext(settings)
    if previous is not None:
        previous.close()
    return _context
