"""Faust's aiokafka transport, with a consumer that never skips a record it fetched.

faust-streaming 0.15 lost records when a worker started on a backlog (about one fetch batch per
partition, in 1 start out of 4 here). Its recovery resumes the stream partitions, then seeks them to
their committed offsets while the flow is still held, and only then lets the streams run:

1. the fetcher gets a batch before the seek and starts handing it to the streams;
2. the streams skip (and acknowledge) what arrives while the flow is held, trusting the seek to read it
   again;
3. the seek resets the drain loop's read offset to the committed one, but the drain goes on handing
   out the rest of the old batch, so the read offset ends past everything that batch held;
4. the batch fetched again from the committed offset is dropped as already read.

The first records of each partition were never processed, and Faust's gap handling (meant for
compacted topics) then committed past them. Four changes, all in the consumer:

* a batch is handed out only while no seek has happened since it was fetched; when one has, the rest
  of it is left and the partitions are sought to their committed offsets again, so the fetch after
  the seek is the one the streams get;
* a seek to the committed offsets forgets the acknowledgements above them (the skipped records were
  acknowledged), so no commit passes a record before it is read again and handled;
* after every batch, a partition whose fetched records were not all handed out (it left the active set
  while the batch was handed out) is sought back to the first one that was not, so it is fetched
  again (unless a rebalance is under way: Faust seeks every assigned partition when it ends);
* a hole in a topic whose messages are acknowledged (ours are never compacted, and nothing writes
  transactions to them) is never counted as acknowledged: it is logged as an error, and the commits
  of that partition stop below it, so a restart reads it again rather than lose it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock

log = logging.getLogger(__name__)


def first_undelivered(fetched: Mapping[TP, list[Any]], delivered: Mapping[TP, int]) -> dict[TP, int]:
    """For each partition of a fetched batch, the offset of its first record not handed on
    (partitions handed on in full are left out). Records of a partition are in offset order."""
    out: dict[TP, int] = {}
    for tp, records in fetched.items():
        last = delivered.get(tp)
        for record in records:
            if last is None or record.offset > last:
                out[tp] = record.offset
                break
    return out


class Consumer(faust_aiokafka.Consumer):
    _fetched: Mapping[TP, list[Any]] | None = None
    _seeks = 0  # seeks to the committed offsets so far (Faust's recovery does one per rebalance)

    async def perform_seek(self) -> None:
        self._seeks += 1
        await super().perform_seek()
        # Every record from the committed offsets on is read again, so acknowledgements above them
        # (records the streams skipped while the flow was held) must not let a commit pass them before
        # they are handled. Faust resumes the flow right after this, with no await in between.
        with ack_lock:
            self._acked.clear()
            self._acked_index.clear()

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Mapping[TP, list[Any]]:
        records = await super()._getmany(active_partitions, timeout)
        self._fetched = records
        return records

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        generation, seeks = self.app.consumer_generation_id, self._seeks
        self._fetched = None
        delivered: dict[TP, int] = {}
        batch = super().getmany(timeout)
        try:
            async for tp, message in batch:
                if self._seeks != seeks:
                    break
                delivered[tp] = message.offset
                yield tp, message
        finally:
            await batch.aclose()
        fetched, self._fetched = self._fetched, None
        rebalancing = self.app.consumer_generation_id != generation or not self.flow_active
        if self._seeks != seeks:
            # Whether this batch was fetched before the seek or after it cannot be told here, so seek
            # again: the next fetch starts at the committed offsets and the read offsets agree.
            if not rebalancing:
                log.info("a seek to the committed offsets came while a batch was handed out; seeking again")
                await self.perform_seek()
            return
        behind = first_undelivered(fetched or {}, delivered)
        if not behind or rebalancing:
            return
        assigned = self.assignment()
        for tp, offset in behind.items():
            if tp in assigned:
                log.info("%s[%d]: records from offset %d were fetched but not handed out; fetching them again",
                         tp.topic, tp.partition, offset)
                await self.seek(tp, offset)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust calls this with the offset being handed out as offset_to; the hole is below it.
        log.error("%s[%d]: offsets %d..%d were never handed out; not committing past them (a restart reads "
                  "them again)", tp.topic, tp.partition, offset_from, offset_to - 1)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
