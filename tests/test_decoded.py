"""Decoded records kept beside their stored JSON (``storage.decoded``), alone and inside the SQLite index."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from storage.decoded import DecodedRecords
from storage.index_sqlite import SqliteIndex
from tests.index_support import T0, record, sighting


def test_the_same_text_gives_the_same_record_and_other_text_a_new_one() -> None:
    cache = DecodedRecords(size=2)
    a = record(1, sightings=[sighting("https://a.example/1")])
    doc = a.model_dump_json()
    first = cache.decode(a.media_id, doc)
    assert first == a and cache.decode(a.media_id, doc) is first
    changed = a.model_copy(update={"score": 0.5})
    second = cache.decode(a.media_id, changed.model_dump_json())
    assert second == changed and second is not first


def test_the_least_recently_used_record_goes_first() -> None:
    cache = DecodedRecords(size=2)
    docs = {n: record(n).model_dump_json() for n in (1, 2, 3)}
    ids = {n: record(n).media_id for n in docs}
    one = cache.decode(ids[1], docs[1])
    cache.decode(ids[2], docs[2])
    assert cache.decode(ids[1], docs[1]) is one  # 1 used again: 2 is now the oldest
    cache.decode(ids[3], docs[3])
    assert len(cache) == 2 and cache.decode(ids[1], docs[1]) is one


def test_bad_stored_json_still_fails_validation() -> None:
    with pytest.raises(ValueError):
        DecodedRecords().decode("x", '{"media_id": "not a sha256"}')


def test_a_record_another_index_wrote_is_read_again(tmp_path: Path) -> None:
    # Two indexes on one file, as two worker processes: each keeps its own decoded records, and a
    # sighting the other one added must show, not the version this one decoded before.
    path = tmp_path / "index.sqlite3"
    one, two = SqliteIndex(path), SqliteIndex(path)
    try:
        base = record(7, sightings=[sighting("https://a.example/7")])
        one.upsert_many([base])
        assert one.get(base.media_id) is not None and two.get(base.media_id) is not None
        one.add_sightings([(base.media_id, sighting("https://b.example/7", first=T0 + timedelta(hours=1)))])
        two.add_sightings([(base.media_id, sighting("https://c.example/7", first=T0 + timedelta(hours=2)))])
        after = two.get(base.media_id)
        assert after is not None
        urls = {str(s.canonical_url) for s in after.sightings}
        assert urls == {"https://a.example/7", "https://b.example/7", "https://c.example/7"}
        # ``one`` last wrote the version with a and b; its next write must merge into two's, with c
        one.add_sightings([(base.media_id, sighting("https://d.example/7", first=T0 + timedelta(hours=3)))])
        last = one.get(base.media_id)
        assert last is not None and {str(s.canonical_url) for s in last.sightings} == urls | {"https://d.example/7"}
    finally:
        one.close()
        two.close()
