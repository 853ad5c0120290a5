"""Publish ``UrlDiscovered`` events to Kafka with kafka-python.

Keyed by canonical URL (same URL → same partition → the stream's dedup table sees it), ``acks=all``
and idempotence so a retried send is neither lost nor doubled, and compressed. kafka-python 3 has
no bound on its send buffer, so backpressure comes from :meth:`UrlPublisher.publish` itself: it
waits for the acknowledgement of every event it sent, and a failure is raised, never dropped.
"""

from __future__ import annotations

from types import TracebackType

from kafka import KafkaProducer
from kafka.errors import KafkaError

from deepwatch.contracts import TOPIC_URLS, UrlDiscovered


class PublishError(RuntimeError):
    pass


class UrlPublisher:
    def __init__(self, bootstrap: str, max_block_s: float = 30.0, topic: str = TOPIC_URLS) -> None:
        self.topic = topic
        self.timeout_s = max_block_s
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            compression_type="gzip",
            linger_ms=20,
            retries=5,
            max_block_ms=int(max_block_s * 1000),
            client_id="deepwatch-ingest",
        )

    def publish(self, events: list[UrlDiscovered]) -> list[tuple[int, int]]:
        """Send and wait for every acknowledgement; return (partition, offset) per event."""
        futures = [self._producer.send(self.topic, key=e.key(), value=e.to_json()) for e in events]
        try:
            return [(m.partition, m.offset) for m in (f.get(timeout=self.timeout_s) for f in futures)]
        except KafkaError as exc:
            raise PublishError(f"publishing to {self.topic} failed: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=self.timeout_s)

    def __enter__(self) -> UrlPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
