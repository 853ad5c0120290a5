"""Publishing the results of a batch: one aiokafka record batch per partition instead of a send per result.

On the URL-hit path every event publishes a ``ScoredMedia``. aiokafka's ``send`` puts each message into the
same record batches the sender ships, but costs a future, the partitioner and the accumulator's bookkeeping in
Python per message: a tenth of a hit. Appending the bytes to a record batch of our own per partition
(``create_batch``/``send_batch``, aiokafka's public batch API) costs a few microseconds, and the broker sees the
same batches. Results keep Kafka's default partition for their key (``deepwatch.partition``), as ``send`` gave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from deepwatch.partition import DefaultPartitioner


class ResultBatches:
    """Results added during a batch of events, in record batches: :meth:`send` ships what has been added (the
    pipeline calls it after each group of results, so a result is not held while later events are scored);
    :meth:`settle` returns once the broker has every one (the events are acknowledged after that)."""

    def __init__(self, producer: Callable[[], Any], topic: str) -> None:
        self._producer = producer  # aiokafka's producer, asked for when needed: Faust starts it after the app is made
        self.topic = topic
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] | None = None  # the topic's, read once a batch of events
        self._open: dict[int, Any] = {}  # partition -> the record batch being filled
        self._sent: list[asyncio.Future[Any]] = []  # delivery of the record batches sent since the last settle

    async def add(self, results: Sequence[tuple[bytes, bytes]]) -> None:
        """Append ``(key, value)`` results to their partitions' open record batches; a batch that fills is sent."""
        producer = self._producer()
        if self._partitions is None:
            self._partitions = sorted(await producer.partitions_for(self.topic))
        placed = self._partitioner.place([key for key, _ in results], self._partitions)
        for (key, value), partition in zip(results, placed, strict=True):
            batch = self._open.get(partition)
            if batch is None:
                batch = self._open[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: ship it, start the next
                await self._send(partition)
                batch = self._open[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a result of {len(value)} bytes does not fit in a record batch")

    async def _send(self, partition: int) -> None:
        batch = self._open.pop(partition)
        self._sent.append(await self._producer().send_batch(batch, self.topic, partition=partition))

    async def send(self) -> None:
        """Send the record batches still open (without waiting for the broker)."""
        for partition in list(self._open):
            await self._send(partition)

    async def settle(self) -> None:
        """Send the batches still open and wait until the broker has acknowledged all sent since the last call."""
        await self.send()
        sent, self._sent = self._sent, []
        self._partitions = None  # partitions may be added to the topic between two batches
        if sent:
            await asyncio.gather(*sent)
