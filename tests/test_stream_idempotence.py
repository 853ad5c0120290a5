"""A redelivered event must not count twice: the sighting watermark, on every index backend."""

from __future__ import annotations

from datetime import timedelta

from deepwatch.contracts import EventPosition, Hints, Sighting
from storage.index import RecordHead, SearchIndex
from storage.merge import add_sighting, add_sightings, merge_records
from storage.query import SearchQuery
from tests.index_support import T0, record, sighting

URL = "https://example.com/v/1"
PART = "deepwatch.urls:2"


def at(offset: int, ts: int, url: str = URL, when: timedelta = timedelta(0)) -> Sighting:
    base = sighting(url, first=T0 + when)
    return base.model_copy(update={"applied": {PART: EventPosition(offset=offset, timestamp_ms=ts)}})


def counts(index: SearchIndex, media_id: str) -> dict[str, int]:
    stored = index.get(media_id)
    assert stored is not None
    return {s.canonical_url: s.count for s in stored.sightings}


def test_replayed_events_do_not_count_again(index: SearchIndex) -> None:
    first = record(1, sightings=[at(10, 1_000)])
    index.upsert(first)
    index.upsert(first)  # the scoring path replayed: still one sighting
    assert counts(index, first.media_id) == {URL: 1}

    index.add_sighting(first.media_id, at(11, 1_001, when=timedelta(hours=1)))
    index.add_sighting(first.media_id, at(11, 1_001, when=timedelta(hours=1)))  # redelivered
    index.add_sighting(first.media_id, at(10, 1_000))  # the first event, redelivered after a crash
    assert counts(index, first.media_id) == {URL: 2}

    other = "https://example.com/v/2"
    index.add_sighting(first.media_id, at(12, 1_002, url=other))
    index.add_sighting(first.media_id, at(12, 1_002, url=other))
    assert counts(index, first.media_id) == {URL: 2, other: 1}

    # A topic recreated from offset 0 (the embedded broker keeps topics in memory): lower offset, later
    # time. A new event, not a replay.
    after = index.add_sighting(first.media_id, at(0, 5_000, when=timedelta(hours=2)))
    assert counts(index, first.media_id) == {URL: 3, other: 1}
    mark = next(s for s in after.sightings if s.canonical_url == URL).applied[PART]
    assert (mark.offset, mark.timestamp_ms) == (0, 5_000)
    assert after.last_seen == T0 + timedelta(hours=2)


def test_events_without_a_position_always_count() -> None:
    # sightings from outside the stream (imports, the API) carry no position: each call is one event
    base = record(2, sightings=[sighting(URL)])
    once = add_sighting(base, sighting(URL))
    assert add_sighting(once, sighting(URL)).sightings[0].count == 3


def test_upsert_keeps_the_later_watermark() -> None:
    newer = record(3, sightings=[at(20, 2_000).model_copy(update={"count": 4})])
    older = record(3, sightings=[at(5, 1_500)])
    for merged in (merge_records(newer, older), merge_records(older, newer)):
        s = merged.sightings[0]
        assert s.count == 4 and s.applied[PART].offset == 20


def test_a_batch_of_sightings_is_each_in_order(index: SearchIndex) -> None:
    """``add_sightings`` (the stream's URL hits, a batch at a time) is ``add_sighting`` per item: in order,
    replays within the batch and of earlier events ignored, an unknown record answered None."""
    first = record(1, sightings=[at(10, 1_000)])
    second = record(2, sightings=[sighting("https://example.com/v/2")])
    index.upsert_many([first, second])
    other = "https://example.com/v/3"
    batch = [
        (first.media_id, at(11, 1_001, when=timedelta(hours=1))),
        (first.media_id, at(11, 1_001, when=timedelta(hours=1))),  # redelivered within the batch
        (record(9).media_id, at(12, 1_002)),  # no such record
        (second.media_id, at(13, 1_003, url=other)),
        (first.media_id, at(10, 1_000)),  # replay of an event before the batch
        (first.media_id, at(14, 1_004, when=timedelta(hours=2))),
    ]
    out = index.add_sightings(batch)
    # stored as the pure merge makes it, whichever way the backend wrote it (counts only: in place)
    assert index.get(first.media_id) == add_sightings(first, [s for mid, s in batch if mid == first.media_id])
    assert index.get(second.media_id) == add_sightings(second, [s for mid, s in batch if mid == second.media_id])
    assert out[2] is None
    # each item: its record's head (what a result names of it)
    assert out[0] == out[1] == out[4] == out[5] == RecordHead.of(index.get(first.media_id))  # type: ignore[arg-type]
    assert out[3] == RecordHead.of(index.get(second.media_id))  # type: ignore[arg-type]
    assert counts(index, first.media_id) == {URL: 3}
    assert counts(index, second.media_id) == {"https://example.com/v/2": 1, other: 1}
    assert index.find_by_canonical_url(other) == index.get(second.media_id)
    assert index.add_sightings([]) == []


def test_every_read_gives_the_record_the_pure_merge_makes(index: SearchIndex) -> None:
    """However a backend stores URL hits (SQLite counts a known URL up in a row of its own and leaves the record's
    JSON as it was), ``get``, ``find_by_canonical_url`` and ``search`` return the record the pure merge makes: after
    reposts with the stored hints or none, with new hints, at a new URL, earlier than anything seen, from another
    partition, and replays of all of these."""
    hinted = at(1, 100).model_copy(update={"hints": Hints(title="a clip")})
    base = record(4, sightings=[hinted, sighting("https://example.com/v/9")])
    index.upsert(base)
    new_url = "https://example.com/v/10"
    elsewhere = at(2, 101, when=timedelta(hours=5)).model_copy(
        update={"applied": {"deepwatch.urls:7": EventPosition(offset=2, timestamp_ms=101)}})
    batches = [
        [at(2, 101, when=timedelta(hours=1)).model_copy(update={"hints": Hints(title="a clip")}),
         at(3, 102, when=timedelta(hours=2))],
        [at(3, 102, when=timedelta(hours=2)),  # a replay
         at(4, 103, when=timedelta(hours=3)).model_copy(update={"hints": Hints(title="renamed")})],
        [at(5, 104, url=new_url, when=timedelta(hours=4)), at(6, 105, when=timedelta(hours=-1))],
        [elsewhere, at(7, 106, when=timedelta(hours=6))],
        [elsewhere, at(5, 104, url=new_url, when=timedelta(hours=4))],  # replays only: nothing changes
    ]
    expected = base
    for batch in batches:
        heads = index.add_sightings([(base.media_id, s) for s in batch])
        expected = add_sightings(expected, batch)
        assert index.get(base.media_id) == expected
        assert heads == [RecordHead.of(expected)] * len(batch)
        assert index.find_by_canonical_url(new_url if new_url in counts(index, base.media_id) else URL) == expected
        assert index.search(SearchQuery(text="renamed")).items == ([expected] if "renamed" in str(expected) else [])
    assert counts(index, base.media_id) == {URL: 7, "https://example.com/v/9": 1, new_url: 1}
    assert expected.first_seen == T0 - timedelta(hours=1) and expected.last_seen == T0 + timedelta(hours=6)
    assert index.aggregate().sightings == 9
