"""Publish events to Kafka with kafka-python: ``UrlDiscovered`` (the crawler, ``deepwatch submit``, the API) and
``ScoredMedia`` outside the stream (``detectors reverdict --publish``).

Each keyed by its ``key()`` (a URL's by canonical URL: same URL → same partition → the stream's dedup table
sees it; a result by media id, as the stream publishes it), ``acks=all``
and idempotence so a retried send is neither lost nor doubled, and compressed. kafka-python 3 has
no bound on its send buffer, so backpressure comes from :meth:`EventPublisher.publish` itself: at most
two windows of events are unacknowledged at a time (it waits for the older window while the newer
one is sent, so the pipeline never drains), and every event's acknowledgement is awaited before it
returns; a failure is raised, never dropped.

Throughput (``deepwatch bench ingest``): large batches (``batch_size``) with a short linger make
fewer, bigger produce requests, which costs the sender thread less per event; the partition is
computed here (:mod:`deepwatch.partition`); the ``crc32c`` package spares kafka-python its pure-Python
checksum of every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from deepwatch.contracts import TOPIC_URLS
from deepwatch.partition import partition_for

WINDOW = 5000  # events awaited at a time; two windows (~3 MB of JSON) at most in flight
BATCH_BYTES = 512 * 1024


class PublishError(RuntimeError):
    pass


class Keyed(Protocol):
    """An event as published: its Kafka key and its JSON (the contracts' ``key()`` and ``to_json()``)."""

    def key(self) -> bytes: ...

    def to_json(self) -> bytes: ...


class EventPublisher:
    def __init__(
        self,
        bootstrap: str,
        max_block_s: float = 30.0,
        topic: str = TOPIC_URLS,
        window: int = WINDOW,
        client_id: str = "deepwatch-ingest",
    ) -> None:
        """Raises :class:`PublishError` when no broker answers at ``bootstrap``."""
        self.topic = topic
        self.timeout_s = max_block_s
        self.window = window
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                acks="all",
                enable_idempotence=True,
                compression_type="gzip",
                linger_ms=20,
                batch_size=BATCH_BYTES,
                retries=5,
                max_block_ms=int(max_block_s * 1000),
                bootstrap_timeout_ms=int(max_block_s * 1000),  # an absent broker fails as fast as a full buffer
                client_id=client_id,
            )
        except KafkaError as exc:  # e.g. NoBrokersAvailable: callers handle one error type
            raise PublishError(f"no Kafka broker at {bootstrap}: {exc}") from exc

    def publish(self, events: Sequence[Keyed]) -> list[tuple[int, int]]:
        """Send and wait for every acknowledgement; return (partition, offset) per event."""
        if not events:
            return []
        send = self._producer.send
        try:
            partitions = sorted(self._producer.partitions_for(self.topic))
            count = len(partitions)
            futures = []
            acked = 0
            for event in events:
                key = event.key()
                futures.append(
                    send(self.topic, key=key, value=event.to_json(), partition=partitions[partition_for(key, count)])
                )
                if len(futures) - acked >= 2 * self.window:
                    for future in futures[acked : acked + self.window]:
                        future.get(timeout=self.timeout_s)
                    acked += self.window
            self._producer.flush(timeout=self.timeout_s)  # the tail need not wait out linger_ms
            return [(m.partition, m.offset) for m in (f.get(timeout=self.timeout_s) for f in futures)]
        except KafkaError as exc:
            raise PublishError(f"publishing to {self.topic} failed: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=self.timeout_s)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
