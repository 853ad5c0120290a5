"""The Faust app of the stream worker (``deepwatch worker``).

It consumes ``deepwatch.urls``. Every message is validated against the contract first: a poison
message goes to ``deepwatch.dlq`` with its reason and the partition moves on. Valid events go to the
:class:`~stream.pipeline.StreamPipeline` (dedup, fetch, score, record).

The topic's records come in batches, one per fetch from Kafka, straight from the consumer
(:class:`~stream.transport.Consumer`'s batch handlers) rather than through a Faust agent: an agent's
stream costs ~95 us of Faust's bookkeeping per record (an Event, a queue, a loop turn, sensors) while
the whole URL-hit path is meant to cost ~100 us. Faust still runs everything else: the consumer group
and its rebalances, the offsets and their commits, the handled-URL table and its changelog, the web
views.

At-least-once: a record is acknowledged, and so may be committed, only after its batch is handled, and
the pipeline returns only once every event's outcome is written (its stages retry our own services for
as long as they are down), so a crash never commits an unwritten event; a rebalance waits for the batch
in hand (Faust waits for every record taken and not yet acknowledged). The redelivery after a crash is
harmless because every write is idempotent (see ``stream.pipeline``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Protocol

import faust
from faust.streams import _current_event  # the stream's current event, which table writes read
from faust.types import Message

from deepwatch.contracts import (
    TOPIC_DLQ,
    TOPIC_RESULTS,
    TOPIC_URLS,
    ContractError,
    DeadLetter,
    UrlDiscovered,
    parse,
)
from deepwatch.partition import DefaultPartitioner
from deepwatch.settings import Settings
from stream.metrics import CONTENT_TYPE, StreamMetrics
from stream.records import Position, ResultMessage
from stream.results import ResultBatches
from stream.retry import GiveWay
from stream.transport import Transport

log = logging.getLogger(__name__)


def outcome_counts(outcomes: Sequence[str]) -> str:
    """``"18 url, 2 new"``: how many events of a batch had each outcome, the most common first."""
    return ", ".join(f"{count} {outcome}" for outcome, count in Counter(outcomes).most_common())


class Pipeline(Protocol):
    """What happens to a valid ``UrlDiscovered`` event (``stream.pipeline.StreamPipeline``)."""

    async def process(self, event: UrlDiscovered, position: Position | None = None,
                      deadline: float | None = None) -> object:
        """One event's outcome; raises ``stream.retry.GiveWay`` when, past ``deadline``, it was still waiting for
        a service that is down."""
        ...

    async def process_many(
        self, events: Sequence[tuple[UrlDiscovered, Position | None]], deadline: float | None = None
    ) -> Sequence[object]:
        """The events of one batch, in order; their outcomes in that order. Past ``deadline`` (``time.monotonic``)
        it starts no new costly event, stops waiting for services that are down, and returns the outcomes of
        those handled (the first of them at least, unless it was such a wait)."""
        ...


def dead_letter(
    payload: bytes | None,
    key: bytes | None,
    *,
    stage: str,
    error: Exception,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    attempts: int = 1,
) -> DeadLetter:
    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw.decode("utf-8", errors="replace")

    return DeadLetter(
        payload=text(payload) or "",
        key=text(key),
        topic=topic,
        partition=partition,
        offset=offset,
        stage=stage,
        error_type=type(error).__name__,
        message=str(error)[:10_000],
        attempts=attempts,
    )


# Tries of an event whose pipeline raised something unforeseen (a bug) before it is dead-lettered: the
# partition must move on, and the letter keeps the event for a replay once the bug is fixed.
INTERNAL_ATTEMPTS = 3
HANDLED_TABLE = "deepwatch-urls-handled"


class BatchTable(MutableMapping[str, str]):
    """The handled-URL table as the pipeline sees it while it handles a batch.

    Faust writes a table key to the changelog partition of the event being handled, which it reads from
    the stream's current event; a batch has none, so a write here sets it to an event of the batch's record
    of that URL (the key of a URL event is its canonical URL, so they share a partition). The events are
    made only for the writes: most URLs of a busy crawl were written long ago.
    """

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        self.messages: dict[str, Message] = {}  # canonical URL -> its record in the current batch

    def __getitem__(self, key: str) -> str:
        return self.table[key]

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self.table.get(key)
        return default if value is None else value

    def __setitem__(self, key: str, value: str) -> None:
        message = self.messages.get(key)
        event = None if message is None else self.table.app.create_event(message.key, message.value,
                                                                          message.headers, message)
        token = _current_event.set(weakref.ref(event)) if event is not None else None
        try:
            self.table[key] = value
        finally:
            if token is not None:
                _current_event.reset(token)

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def create_app(settings: Settings, bootstrap: str, pipeline: Pipeline | None = None) -> faust.App:
    app = faust.App(
        "deepwatch-stream",
        broker=[f"kafka://{hp.strip()}" for hp in bootstrap.split(",")],
        store="rocksdb://" if settings.worker_store == "rocksdb" else "memory://",
        web_host=settings.probe_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.data_dir / "faust"),
        processing_guarantee="at_least_once",
        producer_partitioner=DefaultPartitioner(),
    )
    # Before any topic is declared: the topics' conductor takes the transport from the app.
    app.transport = Transport(app.conf.broker_consumer, app)
    # Raw bytes in and out: we validate ourselves so a bad message becomes a dead letter instead of
    # a deserialisation error inside Faust that would stall the partition.
    urls = app.topic(TOPIC_URLS, key_type=bytes, value_type=bytes, value_serializer="raw")
    dlq = app.topic(TOPIC_DLQ, key_type=bytes, value_type=bytes, value_serializer="raw")
    results = app.topic(TOPIC_RESULTS, key_type=bytes, value_type=bytes, value_serializer="raw")
    # Canonical URL -> media_id (or FAILED). str keys: bytes keys broke changelog recovery here.
    table = app.Table(HANDLED_TABLE, default=None, key_type=str, value_type=str,
                      partitions=settings.kafka_partitions)
    handled = BatchTable(table)
    metrics = getattr(pipeline, "metrics", None) or StreamMetrics()

    # Straight to the producer, in record batches (stream.results): Faust's Topic.send costs as much again per
    # message (futures, sensors, callbacks), and it does not hold a commit back until the message is written.
    pending_results = ResultBatches(lambda: app.producer._ensure_producer(), TOPIC_RESULTS)
    results_declared = False

    async def publish_results(found: Sequence[ResultMessage]) -> None:
        nonlocal results_declared
        if not results_declared:  # what Topic.send did first (creates the topic where the broker does not)
            await results.maybe_declare()
            results_declared = True
        await pending_results.add(found)
        await pending_results.send()  # out now, not at the end of the batch: scoring new media takes a while

    async def publish_dead_letter(letter: DeadLetter) -> None:
        await dlq.send(key=(letter.key or "").encode() or None, value=letter.to_json())

    chosen: Pipeline = pipeline or _real_pipeline(settings, handled, publish_results, publish_dead_letter, metrics)

    async def handle_one(discovered: UrlDiscovered, position: Position, message: Message,
                         deadline: float | None) -> str:
        """One event on its own, tried a few times before a bug in its path dead-letters it (GiveWay passes)."""
        for attempt in range(1, INTERNAL_ATTEMPTS + 1):
            try:
                return str(await chosen.process(discovered, position, deadline))
            except GiveWay:
                raise
            except Exception as exc:
                log.exception("pipeline failed on %s (attempt %d)", discovered.canonical_url, attempt)
                if attempt == INTERNAL_ATTEMPTS:
                    letter = dead_letter(message.value, message.key, stage="internal", error=exc,
                                         topic=position.topic, partition=position.partition,
                                         offset=position.offset, attempts=attempt)
                    metrics.dead_letters.labels("internal").inc()
                    await dlq.send(key=message.key, value=letter.to_json())
                    return "dead-lettered"
                await asyncio.sleep(attempt)
        raise AssertionError("unreachable")

    async def handle_batch(messages: Sequence[Message]) -> int:
        """The records of ``deepwatch.urls`` from one fetch, in ``worker_batch_max`` at most at a time, until
        ``worker_batch_budget_s`` has passed; returns how many, from the first, were handled (the consumer
        acknowledges those and reads the rest again)."""
        log.info("%d records of %s from one fetch", len(messages), TOPIC_URLS)  # the benchmark times from here
        deadline = time.monotonic() + settings.worker_batch_budget_s
        taken = 0  # records handled so far, from the first
        while taken < len(messages):
            chunk = messages[taken : taken + settings.worker_batch_max]
            done = await handle_records(chunk, deadline)
            taken += done
            if done < len(chunk) or time.monotonic() > deadline:
                break
        if taken < len(messages):
            log.info("handled %d of %d records within %.0f s; the rest is read again", taken, len(messages),
                     settings.worker_batch_budget_s)
        return taken

    # Poison records a batch dead-lettered past where it was cut short (deadline): read again, they must not be
    # dead-lettered twice. (A crash or a rebalance in between may still repeat one: the DLQ is at least once.)
    lettered_ahead: set[tuple[str, int, int]] = set()

    async def handle_records(messages: Sequence[Message], deadline: float | None = None) -> int:
        """Validate and handle ``messages``; returns how many, from the first, were handled (fewer than all only
        when ``deadline`` passed)."""
        valid: list[tuple[UrlDiscovered, Position, Message]] = []
        poison: list[int] = []  # index in messages of each record that is not an event
        at: list[int] = []  # index in messages of each valid event
        for index, message in enumerate(messages):
            try:
                discovered = parse(UrlDiscovered, message.value or b"")
            except ContractError as exc:
                poison.append(index)
                where = (message.topic, message.partition, message.offset)
                if where in lettered_ahead:
                    lettered_ahead.discard(where)
                    continue
                letter = dead_letter(message.value, message.key, stage="validate", error=exc, topic=message.topic,
                                     partition=message.partition, offset=message.offset)
                metrics.dead_letters.labels("validate").inc()
                await dlq.send(key=message.key, value=letter.to_json())
                log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
                continue
            position = Position(message.topic, message.partition, message.offset, int(message.timestamp * 1000))
            valid.append((discovered, position, message))
            at.append(index)
        handled.messages = {d.canonical_url: m for d, _, m in valid}
        try:
            outcomes = [str(o) for o in await chosen.process_many([(d, p) for d, p, _ in valid], deadline)]
        except Exception:
            # A bug on some event's path: find it one event at a time. What the batch wrote before it
            # failed is written again, which changes nothing (idempotent writes, sighting watermarks).
            log.exception("a batch of %d events failed; handling them one at a time", len(valid))
            outcomes = []
            for d, p, m in valid:
                try:
                    outcomes.append(await handle_one(d, p, m, deadline))
                except GiveWay as gave:
                    log.warning("%s; the rest of the batch is read again", gave)
                    break
        # Handled: the messages before the first valid event left for later (all when none was left).
        count = len(messages) if len(outcomes) == len(valid) else at[len(outcomes)]
        valid = valid[: len(outcomes)]
        lettered_ahead.update((m.topic, m.partition, m.offset) for m in (messages[i] for i in poison if i >= count))
        # The broker has every result of the batch before its events are acknowledged: no commit passes an
        # event whose result could still be lost.
        await pending_results.settle()
        if valid and log.isEnabledFor(logging.INFO):
            if settings.worker_log_events:
                # One record per batch, a line per event: formatting each alone cost a tenth of the hit path.
                log.info("\n".join(f"{p.topic}[{p.partition}]@{p.offset} {d.canonical_url}: {outcome}"
                                   for (d, p, _), outcome in zip(valid, outcomes, strict=True)))
            else:
                log.info("handled %d events: %s", len(outcomes), outcome_counts(outcomes))
        messages = messages[:count]
        # once a batch (labels() costs as much as a lookup), and only those handled: the rest count when read again
        metrics.events.labels("validate").inc(count)
        last = {message.tp: message.offset for message in messages}
        for tp, offset in last.items():
            try:
                metrics.lag.labels(str(tp.partition)).set(max(app.consumer.highwater(tp) - offset - 1, 0))
            except Exception:
                pass
        return count

    # Subscribed without an agent: the consumer hands the topic's records to handle_batch (see the docstring).
    app.topics.add(urls)
    app.transport.batch_handlers[TOPIC_URLS] = handle_batch

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok", "part": "worker", "pid": os.getpid(), "rebalancing": bool(app.rebalancing)})

    @app.page("/metrics")
    async def metrics_page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # as a header: aiohttp refuses a content_type argument that carries a charset
        return web.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return app


def _real_pipeline(settings: Settings, handled, publish_results, publish_dead_letter, metrics) -> Pipeline:  # type: ignore[no-untyped-def]
    from storage.index import open_index
    from storage.objects import open_object_store
    from stream.pipeline import StreamPipeline
    from stream.scoring_client import ScoringClient

    return StreamPipeline(
        settings,
        index=open_index(settings),
        store=open_object_store(settings),
        scorer=ScoringClient.from_settings(settings),
        handled=handled,
        publish_results=publish_results,
        publish_dead_letter=publish_dead_letter,
        metrics=metrics,
    )


# The hit path allocates a few dozen short-lived objects per event (events, sightings, results), and with
# CPython's default threshold (700) a collection ran every few events and every few hundred a full one
# over the whole heap (Faust, aiokafka, the decoded records): a sixth of the hit path's time, measured
# driving the pipeline without Faust. Rarer collections still bound the garbage that only a collection
# frees (reference cycles).
GC_THRESHOLDS = (20_000, 20, 20)


def run_worker(settings: Settings, bootstrap: str) -> None:
    """Run the worker until SIGTERM/SIGINT (blocks)."""
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(settings, bootstrap)
    gc.freeze()  # what start-up made lives as long as the process: no collection need walk it again
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    worker.execute_from_commandline()
