"""``stream.results.ResultBatches`` on the real broker: every result arrives once, on its key's default partition,
in the order added, and ``settle`` returns only when the broker has them all."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from bench.stream import reading_from_start
from deepwatch.embedded.broker import ensure_topics
from deepwatch.partition import partition_for
from stream.results import ResultBatches

PARTITIONS = 4


def test_results_arrive_once_on_their_default_partition_in_order(kafka_bootstrap: str) -> None:
    topic = f"deepwatch.test-results.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, partitions=PARTITIONS, names=[topic])
    # enough bytes for several record batches per partition (aiokafka's default batch is 16 KB)
    sent = [(f"media-{i % 97:04d}".encode(), f'{{"n": {i}, "pad": "{"x" * 300}"}}'.encode()) for i in range(2_000)]

    async def read_all() -> dict[int, list[tuple[bytes, bytes]]]:
        got: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
        async with reading_from_start(kafka_bootstrap, topic, PARTITIONS) as consumer:
            while fetched := await consumer.getmany(timeout_ms=1_000):
                for tp, records in fetched.items():
                    got[tp.partition] += [(r.key, r.value) for r in records]
        return got

    async def publish_then_read() -> dict[int, list[tuple[bytes, bytes]]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            batches = ResultBatches(lambda: producer, topic)
            await batches.add(sent[:1_000])
            await batches.add(sent[1_000:1_500])  # a second group of results of the same batch of events
            await batches.settle()
            await batches.add(sent[1_500:])  # a second batch of events, after the first settled
            await batches.settle()
            return await read_all()  # before the producer stops (and flushes): settle must have sent them all
        finally:
            await producer.stop()

    got = asyncio.run(publish_then_read())
    expected: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for key, value in sent:
        expected[partition_for(key, PARTITIONS)].append((key, value))
    assert got == expected
