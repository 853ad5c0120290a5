"""The stream consumer's hand-out rules (``stream.transport``), on batches given to it directly.

Faust's aiokafka consumer is replaced below it by a stand-in that returns the batches a test names and
records the seeks made; everything above it (which records are handed out, where a partition is sought
back to, when a hole is passed over, how a batch topic's records go to their handler) is the real code.
The worker-level proofs that no record is lost are tests/test_stream_restart.py, test_stream_chaos.py
and test_stream_rebalance.py, on a real broker.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from stream.transport import HOLE_READS, Consumer

URLS, CHANGELOG = "deepwatch.urls", "deepwatch-handled-changelog"


class Record(SimpleNamespace):
    """A fetched record as the consumer reads it."""

    def __hash__(self) -> int:  # taken records are kept in a set (Faust's is a WeakSet)
        return id(self)


class Harness:
    """A ``stream.transport.Consumer`` over scripted batches, without Kafka or a Faust app."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[list[tuple[TP, int]]] = []
        self.seeks: list[tuple[TP, int]] = []
        self.during_batch: dict[int, Any] = {}  # index in the batch -> called before that record
        harness = self

        async def scripted_getmany(consumer: Consumer, timeout: float):  # type: ignore[no-untyped-def]
            for i, (tp, offset) in enumerate(harness.batches.pop(0)):
                if i in harness.during_batch:
                    await harness.during_batch.pop(i)()
                yield tp, Record(offset=offset, topic=tp.topic, tp=tp, acked=False)

        async def committed_seek(consumer: Consumer) -> dict[TP, int]:
            return dict(harness.committed)

        monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", scripted_getmany)
        monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", committed_seek)
        self.monkeypatch = monkeypatch
        self.committed: dict[TP, int] = {}
        consumer = Consumer.__new__(Consumer)
        consumer.app = SimpleNamespace(consumer_generation_id=1,
                                       conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
                                       topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == URLS))
        consumer._next, consumer._rewound, consumer._hole_reads = {}, {}, {}  # what __init__ sets
        consumer._read_offset = defaultdict(lambda: None)
        consumer._committed_offset = defaultdict(lambda: None)
        consumer._gap = defaultdict(IntervalTree)
        consumer.flow_active = True

        async def call_thread(fn: Any) -> None:
            await fn()

        async def earliest_offsets(*tps: TP) -> dict[TP, int]:
            return {tp: 0 for tp in tps}

        consumer._thread = SimpleNamespace(seek=lambda tp, offset: self.seeks.append((tp, offset)),
                                           call_thread=call_thread, earliest_offsets=earliest_offsets)
        consumer.assignment = lambda: {TP(URLS, 0), TP(URLS, 1), TP(CHANGELOG, 0)}
        self.consumer = consumer

    def fetch(self, *records: tuple[TP, int]) -> list[tuple[TP, int]]:
        """One batch through ``getmany``; what it hands out, each handed as the drain loop does."""
        self.batches.append(list(records))

        async def drain() -> list[tuple[TP, int]]:
            out = []
            async for tp, message in self.consumer.getmany(1.0):
                out.append((tp, message.offset))
                self.consumer._next[tp] = message.offset + 1
            return out

        return asyncio.run(drain())


P0, P1, C0 = TP(URLS, 0), TP(URLS, 1), TP(CHANGELOG, 0)


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    return Harness(monkeypatch)


def test_records_in_order_are_handed_out_and_read_ones_dropped(harness: Harness) -> None:
    assert harness.fetch((P0, 0), (P0, 1), (P1, 7)) == [(P0, 0), (P0, 1), (P1, 7)]
    assert harness.fetch((P0, 1), (P0, 2)) == [(P0, 2)]  # 1 was read already
    assert harness.seeks == []


def test_a_hole_is_not_handed_out_and_is_fetched_again(harness: Harness) -> None:
    harness.fetch((P0, 0), (P0, 1))
    # 2..4 went missing between two fetches: nothing of P0 from 5 on is handed out, P1 goes on
    assert harness.fetch((P0, 5), (P1, 3), (P0, 6)) == [(P1, 3)]
    assert harness.seeks == [(P0, 2)]
    assert harness.fetch((P0, 2), (P0, 3), (P0, 4), (P0, 5)) == [(P0, 2), (P0, 3), (P0, 4), (P0, 5)]


def test_a_hole_found_again_after_seeking_back_is_passed_over(harness: Harness) -> None:
    harness.fetch((P0, 0))
    for _ in range(HOLE_READS):
        assert harness.fetch((P0, 4)) == []  # the first read, then reads after our seek back to 1
    assert harness.seeks == [(P0, 1)] * HOLE_READS
    assert harness.fetch((P0, 4), (P0, 5)) == [(P0, 4), (P0, 5)]  # really not in the log: going on
    assert harness.consumer._gap[P0]  # Faust's own gap record, so commits may pass it


def test_a_seek_while_a_batch_is_handed_out_leaves_the_rest_and_reads_from_its_target(harness: Harness) -> None:
    harness.fetch((P0, 0), (P1, 0))
    harness.committed = {P0: 1, P1: None}  # nothing of P1 committed yet

    async def recovery_seek() -> None:
        await harness.consumer.seek_to_committed()

    harness.during_batch[2] = recovery_seek  # Faust's recovery seeks while the batch is handed out
    handed = harness.fetch((P0, 1), (P1, 1), (P0, 2), (P1, 2), (C0, 9))
    assert handed == [(P0, 1), (P1, 1), (C0, 9)]  # changelog records always go
    # back to the committed offset, and P1 (which aiokafka leaves where it is) to its first offset
    assert set(harness.seeks) == {(P0, 1), (P1, 0)}
    assert harness.consumer._next[P0] == 1 and harness.consumer._next[P1] == 0


def test_changelog_records_follow_fausts_read_offset_rule(harness: Harness) -> None:
    harness.consumer._read_offset[C0] = 5
    # changelogs may have holes (compaction): no seek back; below the read offset is dropped
    assert harness.fetch((C0, 3), (C0, 5), (C0, 9)) == [(C0, 5), (C0, 9)]
    assert harness.seeks == []


def test_a_stepped_coroutine_is_finished_as_a_task_would() -> None:
    from stream.transport import finish_coroutine

    log: list[str] = []

    async def deliver(gate: asyncio.Event) -> str:
        log.append("started")
        try:
            await asyncio.sleep(0)
            await gate.wait()
            return "delivered"
        finally:
            log.append("finally")

    async def scenario() -> tuple[str, bool]:
        gate = asyncio.Event()
        first = deliver(gate)
        rest = asyncio.ensure_future(finish_coroutine(first, first.send(None)))
        await asyncio.sleep(0.01)
        assert not rest.done()  # still waiting on the gate
        gate.set()
        result = await rest

        # cancelled while it waits: the coroutine sees the cancellation and runs its finally
        second = deliver(asyncio.Event())
        pending = asyncio.ensure_future(finish_coroutine(second, second.send(None)))
        await asyncio.sleep(0.01)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        return result, pending.cancelled()

    assert asyncio.run(scenario()) == ("delivered", True)
    assert log == ["started", "finally", "started", "finally"]


class Drain:
    """The harness's consumer run through ``_drain_messages`` for the batches given, a batch handler on URLS."""

    def __init__(self, harness: Harness, fail: bool = False, take: list[int] | None = None) -> None:
        self.harness, self.fail = harness, fail
        self.take = take or []  # per call, how many records the handler handles (then all)
        self.handed: list[list[tuple[TP, int]]] = []
        self.unacked_while_handling: list[set[int]] = []
        self.one_by_one: list[tuple[TP, int]] = []
        consumer = harness.consumer
        stopped = asyncio.Event()
        original = faust_aiokafka.Consumer.getmany

        async def getmany_then_stop(c: Consumer, timeout: float):  # type: ignore[no-untyped-def]
            async for item in original(c, timeout):
                yield item
            if not harness.batches:
                stopped.set()

        harness.monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", getmany_then_stop)

        async def handler(messages: list[Any]) -> int:
            self.unacked_while_handling.append({m.offset for m in consumer._unacked_messages})
            if self.fail:
                raise RuntimeError("the pipeline failed")
            self.handed.append([(m.tp, m.offset) for m in messages])
            return self.take.pop(0) if self.take else len(messages)

        async def callback(message: Any) -> None:
            self.one_by_one.append((message.tp, message.offset))

        async def no_sleep(seconds: float) -> None:
            return None

        consumer.transport = SimpleNamespace(batch_handlers={URLS: handler})
        consumer.callback = callback
        consumer._stopped, consumer._crashed = stopped, asyncio.Event()
        consumer.log = SimpleNamespace(exception=lambda *args: None)
        consumer.sleep = no_sleep
        consumer._commit_every = None
        consumer.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        consumer._unacked_messages = set()
        consumer._on_message_in = lambda tp, offset, message: None
        consumer._acked, consumer._acked_index = defaultdict(list), defaultdict(set)
        consumer._n_acked, consumer._waiting_for_ack = 0, None
        consumer.consumer_stopped_errors = ()

    def run(self, *batches: list[tuple[TP, int]]) -> None:
        self.harness.batches.extend(list(b) for b in batches)
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        asyncio.run(self.harness.consumer._drain_messages(fetcher))


def test_a_batch_topic_goes_to_its_handler_once_a_fetch_and_is_acknowledged_after(harness: Harness) -> None:
    drain = Drain(harness)
    drain.run([(P0, 0), (C0, 4), (P0, 1), (P0, 2)], [(P0, 3)])
    assert drain.handed == [[(P0, 0), (P0, 1), (P0, 2)], [(P0, 3)]]  # in order, one call a fetch
    assert drain.one_by_one == [(C0, 4)]  # other topics still go to Faust's streams
    # taken but not acknowledged while the handler runs (a rebalance waits for them, no commit passes them)
    assert drain.unacked_while_handling == [{0, 1, 2}, {3}]
    assert harness.consumer._acked[P0] == [0, 1, 2, 3] and not harness.consumer._unacked_messages
    assert harness.consumer._next[P0] == 4


def test_a_failed_batch_is_not_acknowledged(harness: Harness) -> None:
    drain = Drain(harness, fail=True)
    with pytest.raises(RuntimeError, match="the pipeline failed"):
        drain.run([(P0, 0), (P0, 1)])
    assert not harness.consumer._acked[P0]  # read again after the restart the crash leads to
    assert {m.offset for m in harness.consumer._unacked_messages} == {0, 1}


def test_records_a_handler_leaves_are_let_go_and_read_again(harness: Harness) -> None:
    # the handler stops after two records (its time budget ran out): those are acknowledged, the rest let go
    # and their partitions sought back to the first left of each, so the next fetch reads them again
    drain = Drain(harness, take=[2])
    drain.run([(P0, 0), (P1, 5), (P0, 1), (P1, 6)], [(P0, 1), (P1, 6)])
    consumer = harness.consumer
    assert harness.seeks == [(P0, 1), (P1, 6)]
    assert drain.handed == [[(P0, 0), (P1, 5), (P0, 1), (P1, 6)], [(P0, 1), (P1, 6)]]
    assert drain.unacked_while_handling == [{0, 5, 1, 6}, {1, 6}]  # the left ones were not still held
    assert consumer._acked[P0] == [0, 1] and consumer._acked[P1] == [5, 6] and not consumer._unacked_messages
    assert consumer._next == {P0: 2, P1: 7}
