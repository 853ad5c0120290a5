"""Faust's aiokafka transport, with a consumer that hands each partition's records to the streams in
order and without holes.

faust-streaming 0.15 lost records when a worker started on a backlog (about one fetch batch per
partition, in 1 start out of 4 here). Its recovery resumes the stream partitions, then seeks them to
their committed offsets while the flow is still held, and only then lets the streams run:

1. the fetcher gets a batch before the seek and starts handing it to the streams;
2. the streams skip (and acknowledge) what arrives while the flow is held, trusting the seek to read it
   again;
3. the seek resets the drain loop's read offset to the committed one, but the drain goes on handing
   out the rest of the old batch (or finishes handing out one record and only then stores its offset),
   so the read offset ends past records that were never handled;
4. the records fetched again from the committed offset are dropped as already read.

Faust's gap handling (meant for compacted topics) then committed past them. The same drop happens to a
partition paused for backpressure in the middle of a batch: the rest of its records are left out of the
batch, and the next fetch starts after them.

This consumer keeps, per partition, the offset it must hand out next (``_next``): a seek sets it to the
seek's target, handing out a record sets it to the record's offset + 1, unless a seek came while the
record was being handed out. Against it (our topics are never compacted, and nothing writes
transactions to them):

* a record below it was read already and is dropped;
* a record above it means a hole: the record is not handed out, nor the partition's later ones in the
  batch, and the partition is sought back to the expected offset, so the hole is fetched again. Only
  when fetches asked for after that seek (and no other) find the same hole twice is it taken as real (a
  compacted topic, a log start that moved past it) and passed over, with a warning;
* a batch fetched before a seek stops handing out its records of the sought topics when the seek comes
  (or while one is under way), and the partitions are sought to the expected offset after it; table
  changelog records are always handed out (recovery counts every offset of them);
* a record whose handing out overlapped the start or the end of a seek does not move the expected
  offset: the seek sets it when it ends, and a record that was still being handed out then must not
  overwrite it (a benchmark restart lost a thousand records that way);
* a seek to the committed offsets forgets the acknowledgements above them (the skipped records were
  acknowledged), so no commit passes a record before it is read again and handled; a partition with no
  committed offset, which aiokafka leaves where it is, is sought to its first offset.

Seeks this consumer adds go through the consumer's own thread (Faust's ``seek`` calls aiokafka from the
event loop's thread while the other may be fetching), after any seek under way.

``_drain_messages`` replaces Faust's own (``faust.transport.consumer.Consumer._drain_messages``), which
kept its read offset as "the last offset read" except right after a seek, where it held "the next one",
and so could not tell a one-record hole after a seek. It also hands a record out by stepping Faust's
callback once in place; only a callback that has to wait goes through ``wait_first`` as before (which
made four futures for every record: a third of a URL hit's time). The rest of the loop is Faust's.

Batch handlers. A topic named in ``Transport.batch_handlers`` does not go to Faust's streams: the loop
collects its records of one fetch, in order, and awaits its handler with them before it fetches again,
then acknowledges them. Each is tracked as taken when collected, as Faust's conductor does before a
stream gets it, so a rebalance waits for the batch in hand and no commit passes a record before its
batch is handled; collecting counts as handing out for the expected offsets above. A handler that is
cancelled (the worker stopping) leaves its batch unacknowledged, to be read again.

A handler returns how many of its records, from the first, it handled: it may stop early, because no
fetch is made while it runs, and a consumer that does not fetch for ``broker_max_poll_interval`` is put
out of its group (aiokafka). The records it left are let go (no longer tracked as taken) and their
partitions sought back to the first of them, so the next fetches read them again, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.futures import notify

log = logging.getLogger(__name__)

HOLE_READS = 2  # fetches from the hole's start that must find it before it is taken as real

# Returns how many of the records, from the first, it handled (all of them, or a prefix to read again later).
BatchHandler = Callable[[Sequence[Message]], Awaitable[int]]


async def finish_coroutine(coroutine: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Run ``coroutine`` on from where a first ``send(None)`` left it (``waiting_on`` is what it yielded),
    as an asyncio Task would have: the result of each future it waits on is sent back into it, an error
    (this task's cancellation too) is thrown into it."""
    while True:
        value: Any = None
        error: BaseException | None = None
        if waiting_on is None:
            await asyncio.sleep(0)  # a bare yield (asyncio.sleep(0)): one turn of the loop
        else:
            waiting_on._asyncio_future_blocking = False  # what a Task does before it waits on a future
            try:
                value = await waiting_on
            except BaseException as exc:  # handed to the coroutine, which decides (cancellation too)
                error = exc
        try:
            waiting_on = coroutine.throw(error) if error is not None else coroutine.send(value)
        except StopIteration as stop:
            return stop.value


class Consumer(faust_aiokafka.Consumer):
    _seeks = 0  # seeks begun or ended so far, of any kind (Faust's recovery does one per rebalance)
    _seeking = 0  # of them, those under way

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next: dict[TP, int] = {}  # per partition, the offset to hand out next (absent: anything goes)
        self._rewound: dict[TP, tuple[int, int]] = {}  # our seeks back: offset, and _seeks just after
        self._hole_reads: dict[tuple[TP, int], int] = {}  # fetches that found a hole, by its start

    def _expect(self, tp: TP, offset: int | None) -> None:
        if offset is None or offset < 0:
            self._next.pop(tp, None)  # no committed offset: the position is the reset policy's
        else:
            self._next[tp] = offset

    # --- every seek moves the expected offsets --------------------------------------------------------

    async def _seek_under_way(self, seek: Any) -> Any:
        # Counted when it begins and when it ends: a record handed out across either moment may have
        # been fetched from the old position, or be overwritten by the new expected offset.
        self._seeks += 1
        self._seeking += 1
        try:
            return await seek
        finally:
            self._seeking -= 1
            self._seeks += 1

    async def seek_to_committed(self) -> Mapping[TP, int]:
        offsets = await self._seek_under_way(super().seek_to_committed())
        for tp, offset in offsets.items():
            self._expect(tp, offset if offset else None)
        # aiokafka does not move a partition without a committed offset (0 included): its position stays
        # wherever fetching took it, past records the streams may have skipped while the flow was held.
        # Nothing of such a partition was committed, so with "earliest" it is read from its start again.
        acked_topic = self.app.topics.acks_enabled_for
        fresh = [tp for tp, offset in offsets.items() if not offset and acked_topic(tp.topic)]
        if fresh and self.app.conf.consumer_auto_offset_reset == "earliest":
            starts = await self._thread.earliest_offsets(*fresh)
            for tp in fresh:
                await self._seek_back(tp, starts[tp])
        return offsets

    async def perform_seek(self) -> None:
        await super().perform_seek()  # seek_to_committed, above
        # Every record from the committed offsets on is read again, so acknowledgements above them
        # (records the streams skipped while the flow was held) must not let a commit pass them before
        # they are handled. Faust resumes the flow right after this, with no await in between.
        with ack_lock:
            self._acked.clear()
            self._acked_index.clear()

    async def seek(self, partition: TP, offset: int) -> None:
        await self._seek_under_way(super().seek(partition, offset))
        self._expect(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        await self._seek_under_way(super().seek_wait(partitions))
        for tp, offset in partitions.items():
            self._expect(tp, offset)

    async def _seek_back(self, tp: TP, offset: int) -> None:
        """Seek in the consumer's own thread, between two of its fetches (Faust's ``seek`` calls aiokafka
        from this thread while that one may be fetching)."""
        thread = self._thread

        async def seek_there() -> None:
            thread.seek(tp, offset)

        await self._seek_under_way(thread.call_thread(seek_there))
        self._expect(tp, offset)
        self._rewound[tp] = (offset, self._seeks)

    async def _read_again(self, left: Sequence[Message]) -> None:
        """Let go of records a batch handler left (in fetch order) and seek their partitions back to the first
        left of each, so that the fetches after this one read them again."""
        with ack_lock:
            for message in left:
                self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)  # a rebalance waiting for the batch in hand need not wait for these
        first: dict[TP, int] = {}
        for message in left:
            first.setdefault(message.tp, message.offset)
        assigned = self.assignment()
        for tp, offset in first.items():
            self._read_offset[tp] = offset - 1
            if tp in assigned:  # else a rebalance took it: the new owner reads from the committed offset
                await self._seek_back(tp, offset)

    # --- handing out ----------------------------------------------------------------------------------

    def _is_real_hole(self, tp: TP, expected: int, found: int, after_seek_back: bool) -> bool:
        """Whether records ``expected``..``found - 1`` are really not in the log: true once HOLE_READS
        fetches, each asked for after our seek back to ``expected`` with no seek since, started past it."""
        key = (tp, expected)
        reads = self._hole_reads.get(key, 0) + after_seek_back
        if reads < HOLE_READS:
            self._hole_reads[key] = reads
            log.info("%s[%d]: fetched offset %d while %d is next; fetching from %d again",
                     tp.topic, tp.partition, found, expected, expected)
            return False
        del self._hole_reads[key]
        log.warning("%s[%d]: offsets %d..%d are not in the log (%d reads from %d); going on from %d",
                    tp.topic, tp.partition, expected, found - 1, reads, expected, found)
        return True

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        generation, seeks = self.app.consumer_generation_id, self._seeks
        acked_topic = self.app.topics.acks_enabled_for
        expected, read_offset, rewound = self._next, self._read_offset, self._rewound
        rewind: dict[TP, int] = {}  # partitions whose records were left, and where to read them again
        batch = super().getmany(timeout)
        try:
            async for tp, message in batch:
                offset = message.offset
                if not acked_topic(tp.topic):
                    # table changelogs: Faust's rule (recovery counts every offset it reads, and a
                    # compacted changelog has holes)
                    last = read_offset[tp]
                    if last is None or offset >= last:
                        yield tp, message
                    continue
                if tp in rewind:
                    continue
                if self._seeks != seeks or self._seeking:
                    rewind[tp] = offset  # a seek came, or is under way: corrected below, once it has ended
                    continue
                want = expected.get(tp)
                if want == offset and self._hole_reads:
                    self._hole_reads.pop((tp, want), None)  # a hole that was not one
                if want is not None and offset != want:
                    if offset < want:
                        continue  # read already
                    if not self._is_real_hole(tp, want, offset, rewound.get(tp) == (want, seeks)):
                        rewind[tp] = want
                        continue
                    await super()._add_gap(tp, want, offset)
                yield tp, message
        finally:
            await batch.aclose()
        if not rewind:
            return
        while self._seeking:
            await asyncio.sleep(0.01)  # the seek under way sets the positions this corrects: let it end first
        if self.app.consumer_generation_id != generation or not self.flow_active:
            return  # a rebalance: Faust seeks every assigned partition to its committed offset when it ends
        assigned = self.assignment()
        for tp, left_at in rewind.items():
            if tp in assigned:
                # after a seek, the offset it set; else the first record not handed out
                await self._seek_back(tp, expected.get(tp, left_at))

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's loop (``Fetcher`` runs it), keeping ``_next`` instead of checking read offsets, and handing
        a record out in place unless it has to wait."""
        callback = self.callback
        batch_handler_for = cast(Transport, self.transport).batch_handlers.get
        acked_topic = self.app.topics.acks_enabled_for
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        expected, read_offset = self._next, self._read_offset
        commit_every = self._commit_every
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                # Sleeping because sometimes getmany is called in a loop never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    batches: dict[BatchHandler, list[Message]] = {}
                    async for tp, message in records:
                        num_since_yield += 1
                        if num_since_yield > 100:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        batch_handler = batch_handler_for(tp.topic)
                        if batch_handler is not None:
                            self.track_message(message)
                            batches.setdefault(batch_handler, []).append(message)
                            expected[tp] = message.offset + 1  # no await since getmany checked it
                            read_offset[tp] = message.offset
                            continue
                        seeks = self._seeks
                        handing = callback(message)
                        try:
                            # Most records go into a stream's buffer without waiting for anything: stepped
                            # here, that costs nothing, where Faust's wait_first made four futures (a third
                            # of a URL hit's time in the hand-out).
                            waiting_on = handing.send(None)
                        except StopIteration:
                            handed_out = True
                        else:
                            # It waits (the flow is held, a buffer is full): finish it as Faust did, given
                            # up if the flow stops first.
                            rest = finish_coroutine(handing, waiting_on)
                            handed = await self.wait_first(rest, self.suspend_flow.wait())
                            handed_out = rest in handed.done
                        # A record whose handing out was cut short (the flow stopped) is read again; one
                        # handed out while a seek ran leaves the offset the seek set.
                        done = handed_out and self._seeks == seeks
                        if done:
                            expected[tp] = message.offset + 1
                        if done or not acked_topic(tp.topic):  # changelogs: as Faust did
                            read_offset[tp] = message.offset
                    for batch_handler, messages in batches.items():
                        handled = await batch_handler(messages)
                        for message in messages[:handled]:
                            self.ack(message)
                        if handled < len(messages):
                            await self._read_again(messages[handled:])
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}  # topic -> what its records of one fetch go to
