"""The stages one valid ``UrlDiscovered`` event goes through (issue 6).

1. URL dedup: the worker's table of handled canonical URLs (a Faust table, changelog-backed), then the
   index (``media_ids_by_canonical_url``, for all the URLs of a batch the table does not know at once). A known
   URL only adds a sighting.
2. Fetch (SSRF guard and limits from the settings), content dedup on the sha256: known bytes only add
   a sighting.
3. Normalize, fingerprint, near-duplicate search (``find_similar``) and ``stream.dedup.by_content``:
   a near-duplicate of a scored record reuses its verdict; anything else is scored.
4. Score: the original bytes go to the object store (``media/…``), the scoring API reads them there.
5. Record: thumbnail and result JSON in the store, fakes copied to ``flagged/``, the media deleted
   unless ``store_keep_media``, the record upserted, ``ScoredMedia`` published.

Failures. Our own services (index, object store, scoring API) failing is transient whatever the
error: the stage retries with backoff until it works, so the event is never skipped and, since the
worker does not move on, never committed. The media failing for good (NotFound, Forbidden, Blocked,
TooLarge, TooLong, Corrupt, Unsupported, a 422 from the API) is permanent: the URL gets a
:class:`~deepwatch.contracts.UrlFailure` document (``failures/<sha256 of URL>.json`` in the object
store: there is no media id for bytes that never arrived) and the event a dead letter with stage and
reason. A fetch that keeps failing transiently (a host answering 503 for ever) is given
``worker_fetch_attempts`` tries and then dead-lettered with that count: one URL must not hold its
partition for ever.

Idempotence. Every write is keyed by content (object keys) or merged (index upserts), and every
sighting carries its event's position, so a redelivered event (kill -9, rebalance) changes nothing
that its first delivery wrote (``storage.merge.add_sighting``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from deepwatch.contracts import (
    DeadLetter,
    MediaRecord,
    Sighting,
    StoredObjects,
    UrlDiscovered,
    UrlFailure,
    parse,
    utcnow,
)
from deepwatch.media.errors import MediaError
from deepwatch.media.fetch import FetchLimits, fetch
from deepwatch.media.guard import AddressPolicy
from deepwatch.settings import Settings
from storage import keys
from storage.errors import InvalidKey, StorageError
from storage.errors import NotFound as ObjectMissing
from storage.index import DEFAULT_RADIUS, RecordHead, SearchIndex, SearchIndexError, UnknownMedia
from storage.keys import failure_key
from storage.merge import merge_sighting
from storage.objects import ObjectStore
from stream.dedup import Decision, by_content, by_url, near_duplicate_record
from stream.metrics import StreamMetrics
from stream.records import Position, ResultMessage, new_record, result_of, scored, sighting_at, url_failure
from stream.retry import Backoff, GiveWay, past
from stream.scoring_client import ScoringClient, ScoringRejected

log = logging.getLogger(__name__)

T = TypeVar("T")
FAILED = "failed"  # the handled-URL table's value for a URL that failed for good
RECORD_CHUNK = 1_000  # records per index write of URL hits (see StreamPipeline._record_sightings)


class Permanent(Exception):
    """The event cannot succeed: dead-letter it."""

    def __init__(self, stage: str, error: BaseException, attempts: int = 1):
        self.stage = stage
        self.error = error
        self.attempts = attempts
        super().__init__(f"{stage}: {type(error).__name__}: {error}")


def is_service_failure(exc: BaseException) -> bool:
    """Our own index or store failing (down, disk full, locked): worth waiting for, never the media's fault."""
    if isinstance(exc, (InvalidKey, ObjectMissing, UnknownMedia)):
        return False
    return isinstance(exc, (StorageError, SearchIndexError, OSError))


@dataclasses.dataclass(frozen=True)
class _Hit:
    """An event whose canonical URL was handled before: it only adds its sighting to ``media_id``."""

    event: UrlDiscovered
    position: Position | None
    sighting: Sighting
    media_id: str
    remembered: bool = False  # the handled-URL table holds media_id for the URL (no need to write it there)


def _chunks_by_record(hits: list[_Hit], records: int) -> list[list[int]]:
    """Positions in ``hits`` grouped by record (records in order of their first hit, each record's hits in order),
    ``records`` records a chunk."""
    by_record: dict[str, list[int]] = {}
    for position, hit in enumerate(hits):
        by_record.setdefault(hit.media_id, []).append(position)
    groups = list(by_record.values())
    return [[p for group in groups[start : start + records] for p in group] for start in range(0, len(groups), records)]


class StreamPipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        index: SearchIndex,
        store: ObjectStore,
        scorer: ScoringClient,
        handled: MutableMapping[str, str],
        publish_results: Callable[[Sequence[ResultMessage]], Awaitable[Any]],
        publish_dead_letter: Callable[[DeadLetter], Awaitable[Any]],
        metrics: StreamMetrics | None = None,
    ):
        self.settings = settings
        self.index = index
        self.store = store
        self.scorer = scorer
        self.handled = handled
        self.publish_results = publish_results  # sends them now; the caller waits for the broker once a batch
        self.publish_dead_letter = publish_dead_letter
        self.metrics = metrics or StreamMetrics()
        self.limits = FetchLimits.from_settings(settings)
        self.policy = AddressPolicy.from_networks(settings.fetch_allow_networks)
        self.backoff = Backoff.from_settings(settings)
        self.workdir = settings.data_dir / "worker"
        self._deadline: float | None = None  # the batch under way's (process_many): waits for services end there

    # --- the events ---------------------------------------------------------------------------------
    async def process(self, event: UrlDiscovered, position: Position | None = None,
                      deadline: float | None = None) -> str:
        """Handle one event until its outcome is written; returns the outcome ("url", "exact", "near",
        "scored", "variant", "failed", "failed-again"). Raises :class:`GiveWay` when it was still waiting for a
        service that is down at ``deadline``."""
        outcomes, gave_way = await self._run([(event, position)], deadline)
        if gave_way is not None:
            raise gave_way
        return outcomes[0]

    async def process_many(
        self, events: Sequence[tuple[UrlDiscovered, Position | None]], deadline: float | None = None
    ) -> list[str]:
        """Handle a batch of events in order; returns their outcomes in that order.

        A run of URL hits (most events of a busy crawl: reposts of URLs already handled) is one index
        write and their results are published together; any other event ends the run and goes through
        fetching on its own, so that a later event of the same URL finds it handled.

        ``deadline`` (``time.monotonic()``): once it has passed, no event that needs a fetch is started (the
        first event always is), and a stage waiting for a service that is down stops waiting (:class:`GiveWay`).
        The outcomes returned are then those of the events before the first left (the caller reads the rest
        again later)."""
        outcomes, gave_way = await self._run(events, deadline)
        if gave_way is not None:
            log.warning("%s; %d of %d events handled, the rest is read again", gave_way, len(outcomes), len(events))
        return outcomes

    async def _run(self, events: Sequence[tuple[UrlDiscovered, Position | None]],
                   deadline: float | None) -> tuple[list[str], GiveWay | None]:
        """The outcomes of the events handled, and the GiveWay that stopped the others (None: all handled)."""
        outcomes: list[str] = []
        gave_way = None
        self._deadline = deadline
        try:
            await self._handle(events, outcomes)
        except GiveWay as exc:
            gave_way = exc
        finally:
            self._deadline = None
        self.metrics.events.labels("url_dedup").inc(len(outcomes))  # once a batch: labels() costs as much as a lookup
        return outcomes, gave_way

    async def _handle(self, events: Sequence[tuple[UrlDiscovered, Position | None]], outcomes: list[str]) -> None:
        """:meth:`process_many`'s loop, under ``self._deadline``; appends each outcome to ``outcomes`` once it is
        written."""
        hits: list[_Hit] = []
        table = self.handled
        remembered = [table.get(event.canonical_url) for event, _ in events]
        # the URLs the table does not know, looked up in the index together: each alone took ~1 ms
        unknown = [event.canonical_url for (event, _), known in zip(events, remembered, strict=True) if known is None]
        in_index = await self._service("url_dedup", self.index.media_ids_by_canonical_url, unknown) if unknown else {}
        for index, ((event, position), known) in enumerate(zip(events, remembered, strict=True)):
            sighting = sighting_at(event, position)
            if known is None:  # an earlier event of this batch may have handled the URL since (its fetch wrote it)
                known = remembered[index] = table.get(event.canonical_url)
                if known is None:
                    known = in_index.get(event.canonical_url)
            decision = by_url(None if known == FAILED else known)
            if decision is not None and decision.target is not None:
                hits.append(_Hit(event, position, sighting, decision.target, remembered[index] is not None))
                continue
            outcomes += await self._record_hits(hits)
            hits = []
            if index > 0 and past(self._deadline):
                return
            if known == FAILED:
                await self._count_failure_again(sighting)
                outcomes.append("failed-again")
            else:
                outcomes.append(await self._fetch_or_fail(event, position, sighting))
        outcomes += await self._record_hits(hits)

    async def _record_hits(self, hits: list[_Hit]) -> list[str]:
        outcomes = []
        for hit, done in zip(hits, await self._record_sightings(hits, "url"), strict=True):
            outcomes.append("url" if done else await self._fetch_or_fail(hit.event, hit.position, hit.sighting))
        return outcomes

    async def _record_sightings(self, hits: list[_Hit], dedup: str) -> list[bool]:
        """Add each hit's sighting to its record, remember its URL and publish its result; False for a hit whose
        record the index no longer holds.

        The index writes go RECORD_CHUNK records at a time (all the hits of a record in one write, in order), each
        chunk's results made and sent while the next chunk's write runs in its thread: SQLite lets go of the GIL
        while it works, about a third of a write. Results of one record keep their order (they share a key)."""
        chunks = _chunks_by_record(hits, RECORD_CHUNK)
        chunk_hits = [[hits[i] for i in chunk] for chunk in chunks]
        done = [False] * len(hits)
        writing = self._add_sightings(chunk_hits[0]) if chunks else None
        try:
            for k, chunk in enumerate(chunks):
                assert writing is not None
                heads = await writing
                writing = self._add_sightings(chunk_hits[k + 1]) if k + 1 < len(chunks) else None
                for position, ok in zip(chunk, await self._publish_hits(chunk_hits[k], heads, dedup), strict=True):
                    done[position] = ok
        finally:
            if writing is not None:  # left by a failure: the caller reads these events again
                writing.add_done_callback(lambda task: task.cancelled() or task.exception())
        return done

    def _add_sightings(self, hits: list[_Hit]) -> asyncio.Future[list[RecordHead | None]]:
        return asyncio.ensure_future(
            self._service("record", self.index.add_sightings, [(h.media_id, h.sighting) for h in hits]))

    async def _publish_hits(self, hits: list[_Hit], heads: list[RecordHead | None], dedup: str) -> list[bool]:
        done: list[bool] = []
        results: list[ResultMessage] = []
        now = utcnow()
        for hit, head in zip(hits, heads, strict=True):
            if head is None:
                # The table (or the content search) names a record the index no longer has (an index
                # restored from an older backup): fetch and score again rather than lose the event.
                log.warning("%s points at %s, which the index does not hold: fetching again",
                            hit.event.canonical_url, hit.media_id)
                done.append(False)
                continue
            remembered = hit.remembered and hit.media_id == head.media_id
            if not remembered and self.handled.get(hit.event.canonical_url) != head.media_id:
                self.handled[hit.event.canonical_url] = head.media_id  # a table write is a changelog message
            results.append(result_of(head, hit.event, dedup, now))
            done.append(True)
        await self.publish_results(results)
        self.metrics.dedup.labels(dedup).inc(sum(done))
        return done

    async def _fetch_or_fail(self, event: UrlDiscovered, position: Position | None, sighting: Sighting) -> str:
        try:
            return await self._fetch_and_record(event, position, sighting)
        except Permanent as failure:
            await self._fail(event, position, sighting, failure)
            return "failed"

    async def _fetch_and_record(self, event: UrlDiscovered, position: Position | None, sighting: Any) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="event-", dir=self.workdir))
        try:
            self.metrics.events.labels("fetch").inc()
            started = time.monotonic()
            fetched = await self._media("fetch", fetch, event.url, work, self.limits, self.policy,
                                        attempts=self.settings.worker_fetch_attempts)
            fetch_s = time.monotonic() - started
            self.metrics.fetch_seconds.observe(fetch_s)

            self.metrics.events.labels("content_dedup").inc()
            existing = await self._service("content_dedup", self.index.get, fetched.sha256)
            if existing is not None:
                (done,) = await self._record_sightings([_Hit(event, position, sighting, existing.media_id)], "exact")
                if done:
                    return "exact"

            from deepwatch.media.fingerprint import fingerprint_normalized
            from deepwatch.media.normalize import normalize

            self.metrics.events.labels("normalize").inc()
            started = time.monotonic()
            media = await self._media("normalize", normalize, fetched.path, settings=self.settings,
                                      workdir=work / "derived")
            normalize_s = time.monotonic() - started
            self.metrics.events.labels("fingerprint").inc()
            started = time.monotonic()
            fingerprint = await self._media("fingerprint", fingerprint_normalized, media, settings=self.settings,
                                            sha256=fetched.sha256)
            fingerprint_s = time.monotonic() - started
            from deepwatch.media.similar import find_similar

            contract = fingerprint.to_contract()
            similar = await self._service("content_dedup", find_similar, self.index, contract, DEFAULT_RADIUS,
                                          mine=fingerprint)
            decision = by_content(fetched.sha256, False, similar)
            info = media.info.model_copy(update={"bytes": fetched.size})
            timings = {"fetch": fetch_s, "normalize": normalize_s, "fingerprint": fingerprint_s}
            record = new_record(sighting, fingerprint, info, variant_of=decision.variant_of, timings=timings)
            thumb = media.thumbnail if media.thumbnail.is_file() else None

            if decision.action == "reuse":
                assert decision.target is not None
                original = await self._service("content_dedup", self.index.get, decision.target)
                if original is not None:
                    record = near_duplicate_record(record, original)
                    objects = await self._store_derived(record, thumb)
                    await self._write(record.model_copy(update={"objects": objects}), event, "near")
                    return "near"
                decision = Decision("score", "none")  # the original vanished since the search: score this one

            self.metrics.events.labels("score").inc()
            ext = self._check_key("store", keys.check_extension, media.sniffed.ext)
            media_key = keys.media_key(fetched.sha256, ext)
            await self._service("store", self.store.put, media_key, fetched.path, content_type=media.sniffed.mime)
            started = time.monotonic()
            try:
                answer = await self.scorer.score(media_key, until=self._deadline)
            except ScoringRejected as exc:
                await self._service("store", self.store.delete, media_key)
                raise Permanent("score", exc) from exc
            self.metrics.score_seconds.observe(time.monotonic() - started)
            if answer.media_id != fetched.sha256:
                raise Permanent("score", ValueError(f"the API scored {answer.media_id}, not {fetched.sha256}"))

            objects = await self._store_derived(record, thumb)
            if answer.verdict == "fake":
                flagged = keys.flagged_key(fetched.sha256, ext)
                await self._service("store", self.store.put, flagged, fetched.path, content_type=media.sniffed.mime)
                objects = objects.model_copy(update={"media": flagged})
            if self.settings.store_keep_media:
                objects = objects.model_copy(update={"media": objects.media or media_key})
            record = scored(record, answer, objects)
            await self._put_result(record)
            if not self.settings.store_keep_media:
                await self._service("store", self.store.delete, media_key)
            await self._write(record, event, "variant" if record.variant_of else None)
            return "variant" if record.variant_of else "scored"
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _store_derived(self, record: MediaRecord, thumbnail: Path | None) -> StoredObjects:
        objects = StoredObjects(result=keys.result_key(record.media_id))
        if thumbnail is not None:
            key = keys.thumb_key(record.media_id)
            await self._service("store", self.store.put, key, thumbnail, content_type="image/jpeg")
            objects = objects.model_copy(update={"thumbnail": key})
        return objects

    async def _put_result(self, record: MediaRecord) -> None:
        key = keys.result_key(record.media_id)
        await self._service("store", self.store.put, key, record.to_json(), content_type="application/json")

    async def _write(self, record: MediaRecord, event: UrlDiscovered, dedup_hit: str | None) -> None:
        if record.dedup == "near":
            await self._put_result(record)
            self.metrics.dedup.labels("near").inc()
        elif dedup_hit == "variant":
            self.metrics.dedup.labels("variant").inc()
        self.metrics.events.labels("record").inc()
        stored = await self._service("record", self.index.upsert, record)
        self.handled[event.canonical_url] = stored.media_id
        await self.publish_results([result_of(RecordHead.of(stored), event, record.dedup)])

    # --- failures ---------------------------------------------------------------------------------
    async def _fail(self, event: UrlDiscovered, position: Position | None, sighting: Any, failure: Permanent) -> None:
        doc = url_failure(sighting, failure.stage, failure.error, failure.attempts)
        await self._service("dead_letter", self._merge_failure, doc)
        self.handled[event.canonical_url] = FAILED
        letter = DeadLetter(
            payload=event.to_json().decode(),
            key=event.canonical_url,
            topic=position.topic if position else None,
            partition=position.partition if position else None,
            offset=position.offset if position else None,
            stage=failure.stage,
            error_type=doc.error_type,
            message=doc.reason,
            attempts=failure.attempts,
        )
        self.metrics.dead_letters.labels(failure.stage).inc()
        log.warning("dead-lettered %s at %s: %s", event.canonical_url, failure.stage, doc.reason[:300])
        await self.publish_dead_letter(letter)

    async def _count_failure_again(self, sighting: Any) -> None:
        self.metrics.dedup.labels("url").inc()

        def update() -> None:
            old = self.load_failure(sighting.canonical_url)
            if old is not None:
                self._put_failure(old.model_copy(update={"sighting": merge_sighting(old.sighting, sighting,
                                                                                     add_counts=True)}))

        await self._service("dead_letter", update)

    def load_failure(self, canonical_url: str) -> UrlFailure | None:
        try:
            with self.store.get(failure_key(canonical_url)) as stream:
                return parse(UrlFailure, stream.read())
        except ObjectMissing:
            return None

    def _merge_failure(self, doc: UrlFailure) -> None:
        old = self.load_failure(doc.canonical_url)
        if old is not None:  # a redelivered event, or the URL failing again after the table forgot it
            doc = doc.model_copy(update={"sighting": merge_sighting(old.sighting, doc.sighting, add_counts=True)})
        self._put_failure(doc)

    def _put_failure(self, doc: UrlFailure) -> None:
        self.store.put(failure_key(doc.canonical_url), doc.to_json(), content_type="application/json")

    # --- retrying -----------------------------------------------------------------------------------
    async def _service(self, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call our index or store (in a thread: both block) until it answers; media errors pass through."""
        retry = 0
        while True:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except Exception as exc:
                if not is_service_failure(exc):
                    raise
                wait = self.backoff.delay(retry, random.random())
                if past(self._deadline, wait):
                    raise GiveWay(stage, f"{type(exc).__name__}: {exc}") from exc
                retry += 1
                self.metrics.retries.labels(stage).inc()
                log.warning("%s: %s (%s); retry %d in %.1f s", stage, type(exc).__name__, exc, retry, wait)
                await asyncio.sleep(wait)

    async def _media(self, stage: str, fn: Callable[..., T], *args: Any, attempts: int = 1, **kwargs: Any) -> T:
        """A media stage: permanent errors become :class:`Permanent` at once, transient ones after ``attempts``."""
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except MediaError as exc:
                if not exc.retryable:
                    raise Permanent(stage, exc, attempt) from exc
                last = exc
                hint = getattr(exc, "retry_after_s", None)
            except Exception as exc:
                if is_service_failure(exc) and stage != "fetch":
                    last, hint = exc, None  # a full disk under the work directory: wait for it
                else:
                    # a bug or an unforeseen library error on this input: a few tries, then the DLQ
                    log.exception("%s failed unexpectedly (attempt %d of %d)", stage, attempt, attempts)
                    last, hint = exc, None
            if attempt < attempts:
                wait = self.backoff.delay(attempt - 1, random.random())
                if hint is not None:
                    wait = max(wait, min(float(hint), self.backoff.max_s))
                self.metrics.retries.labels(stage).inc()
                await asyncio.sleep(wait)
        assert last is not None
        raise Permanent(stage, last, attempts)

    @staticmethod
    def _check_key(stage: str, check: Callable[[str], str], value: str) -> str:
        try:
            return check(value)
        except InvalidKey as exc:
            raise Permanent(stage, exc) from exc
