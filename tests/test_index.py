"""Conformance suite for search index backends: writes, merges, lookups, near duplicates.

Runs once per backend of ``tests.index_support.BACKENDS``; search, dashboards and reviews are in
``test_index_search.py``.
"""

from __future__ import annotations

import multiprocessing
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepwatch.contracts import FaceScore, Fingerprints, MediaRecord, Review, Sighting
from deepwatch.settings import load_settings
from storage import hamming, merge
from storage.index import RecordHead, SearchIndex, SearchIndexError, UnknownMedia, open_index
from storage.index_sqlite import SqliteIndex
from tests.index_support import HOUR, T0, MakeIndex, _open, drop, hex_of, media_id, record, sighting


# --- round trip and merge -------------------------------------------------------------------
def test_round_trip(index: SearchIndex) -> None:
    r = record(
        1,
        sightings=[sighting("https://example.com/a")],
        detectors={"mesonet": 0.8},
        videohash="0123456789abcdef",
        pdq=["ab" * 32],
        score=0.8,
        verdict="fake",
        review=Review(label="fake", reviewer="mod", at=T0),
    )
    assert index.upsert(r) == r
    assert index.get(r.media_id) == r
    assert index.get(media_id("unknown")) is None


def test_upsert_is_idempotent(index: SearchIndex) -> None:
    r = record(1, sightings=[sighting("https://example.com/a", count=3)], detectors={"mesonet": 0.5})
    index.upsert(r)
    assert index.upsert(r) == r
    stored = index.get(r.media_id)
    assert stored == r
    assert stored is not None and stored.sightings[0].count == 3


def test_upsert_merges_sightings_detectors_and_fields(index: SearchIndex) -> None:
    a, b, c = "https://example.com/a", "https://example.com/b", "https://example.com/c"
    old = record(
        1,
        sightings=[sighting(a, first=T0, last=T0 + HOUR, count=3), sighting(b, first=T0)],
        detectors={"mesonet": 0.2, "xception": 0.4},
        first=T0,
        last=T0 + HOUR,
        score=0.3,
        verdict="error",
        error="detector timed out",
        pdq=["00" * 32],
    )
    new = record(
        1,
        sightings=[sighting(a, first=T0 - HOUR, last=T0 + 2 * HOUR, count=2), sighting(c, first=T0 + HOUR)],
        detectors={"mesonet": 0.9, "efficientnet": 0.7},
        first=T0 - HOUR,
        last=T0 + 2 * HOUR,
        verdict="fake",
    )
    index.upsert(old)
    merged = index.upsert(new)
    assert index.get(merged.media_id) == merged

    assert [s.canonical_url for s in merged.sightings] == [a, b, c]
    sa = merged.sightings[0]
    assert (sa.first_seen, sa.last_seen, sa.count) == (T0 - HOUR, T0 + 2 * HOUR, 3)
    assert {k: v.p_fake for k, v in merged.detectors.items()} == {"mesonet": 0.9, "xception": 0.4, "efficientnet": 0.7}
    assert (merged.first_seen, merged.last_seen) == (T0 - HOUR, T0 + 2 * HOUR)
    assert merged.score == 0.3  # the newer record left it empty
    assert merged.verdict == "fake"
    assert merged.error is None  # a new verdict brings its own error state
    assert merged.fingerprints.pdq == ["00" * 32]  # not recomputed: kept


def test_add_sighting_counts_and_appends(index: SearchIndex) -> None:
    a, b = "https://example.com/a", "https://example.com/b"
    r = index.upsert(record(1, sightings=[sighting(a, count=2)]))
    after = index.add_sighting(r.media_id, sighting(a, first=T0 + HOUR, count=5))
    after = index.add_sighting(r.media_id, sighting(b, first=T0 - HOUR))
    assert index.get(r.media_id) == after
    assert [(s.canonical_url, s.count) for s in after.sightings] == [(a, 7), (b, 1)]
    assert (after.sightings[0].first_seen, after.sightings[0].last_seen) == (T0, T0 + HOUR)
    assert (after.first_seen, after.last_seen) == (T0 - HOUR, T0 + HOUR)


def test_add_sighting_to_unknown_media(index: SearchIndex) -> None:
    with pytest.raises(UnknownMedia):
        index.add_sighting(media_id("nothing"), sighting("https://example.com/a"))
    assert index.get(media_id("nothing")) is None


def test_update_many_changes_what_is_stored_when_it_is_written(index: SearchIndex) -> None:
    index.upsert_many([record(1, sightings=[sighting("https://a.example/1")]), record(2)])
    seen = index.get(record(1).media_id)
    assert seen is not None
    index.add_sighting(seen.media_id, sighting("https://a.example/1", first=T0, count=2))  # counted meanwhile

    def flag(stored: MediaRecord) -> MediaRecord | None:
        return None if stored.media_id == record(2).media_id else stored.model_copy(update={"verdict": "fake"})

    written = index.update_many([record(1).media_id, record(2).media_id, record("missing").media_id], flag)
    assert [r.media_id for r in written] == [record(1).media_id]
    stored = index.get(record(1).media_id)
    assert stored is not None and stored.verdict == "fake"
    assert stored.sightings[0].count == 3  # the change saw the record as stored, with the sighting counted
    assert index.get(record(2).media_id) == record(2)
    assert index.update_many([record(1).media_id], lambda r: r) == []  # unchanged: nothing written
    with pytest.raises(ValueError, match="media_id"):
        index.update_many([record(1).media_id], lambda r: r.model_copy(update={"media_id": record(2).media_id}))


def test_find_by_url_and_sha(index: SearchIndex) -> None:
    # Quotes and wildcards in a URL are data, never SQL or patterns.
    odd = "https://example.com/it's%20'quoted'?q=1;DROP%20TABLE%20media;--&x=_%"
    r1 = index.upsert(record(1, sightings=[sighting("https://example.com/a")]))
    r2 = index.upsert(record(2, sightings=[sighting(odd)]))
    index.add_sighting(r1.media_id, sighting("https://example.com/later"))
    assert index.find_by_canonical_url("https://example.com/a") == index.get(r1.media_id)
    assert index.find_by_canonical_url("https://example.com/later") == index.get(r1.media_id)
    assert index.find_by_canonical_url(odd) == r2
    assert index.find_by_canonical_url("https://example.com/%") is None
    assert index.find_by_canonical_url("https://example.com/none") is None
    assert index.find_by_sha256(r2.media_id) == r2
    assert index.find_by_sha256(media_id("none")) is None
    # the same lookups for many URLs at once: the media id of each that has a record
    asked = ["https://example.com/a", "https://example.com/later", odd, "https://example.com/%",
             "https://example.com/none", "https://example.com/a"]
    assert index.media_ids_by_canonical_url(asked) == {"https://example.com/a": r1.media_id,
                                                       "https://example.com/later": r1.media_id, odd: r2.media_id}
    assert index.media_ids_by_canonical_url([]) == {}


def test_url_points_at_the_newest_record(index: SearchIndex) -> None:
    """A post edited to serve other bytes: the URL now finds the new record, the old one keeps its history."""
    url = "https://example.com/edited"
    old = index.upsert(record(1, sightings=[sighting(url)]))
    new = index.upsert(record(2, sightings=[sighting(url, first=T0 + HOUR)]))
    assert index.find_by_canonical_url(url) == new
    assert index.media_ids_by_canonical_url([url]) == {url: new.media_id}
    assert index.get(old.media_id) == old


urls = st.sampled_from([f"https://example.com/{c}" for c in "abcd"])
versions = st.lists(
    st.tuples(
        st.dictionaries(urls, st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(1, 9)), max_size=4),
        st.dictionaries(st.sampled_from(["m1", "m2", "m3"]), st.floats(0, 1), max_size=3),
    ),
    min_size=1,
    max_size=4,
)


def _version(seen: dict[str, tuple[int, int, int]], detectors: dict[str, float]) -> MediaRecord:
    sightings = [
        sighting(u, first=T0 + min(a, b) * HOUR, last=T0 + max(a, b) * HOUR, count=c) for u, (a, b, c) in seen.items()
    ]
    first = min((s.first_seen for s in sightings), default=T0)
    last = max((s.last_seen for s in sightings), default=T0)
    return record(1, sightings=sightings, detectors=detectors, first=first, last=last)


def test_upserts_merge_like_a_union(make_index: MakeIndex) -> None:
    """Whatever the order, every URL and detector ever written is there, with the widest range and the
    largest count; and replaying every version again changes nothing."""

    @settings(max_examples=30, deadline=None)
    @given(vs=versions)
    def check(vs: list[tuple[dict[str, tuple[int, int, int]], dict[str, float]]]) -> None:
        idx = make_index()
        for seen, detectors in vs:
            idx.upsert(_version(seen, detectors))
        final = idx.get(media_id(1))
        assert final is not None
        by_url = {s.canonical_url: s for s in final.sightings}
        assert set(by_url) == {u for seen, _ in vs for u in seen}
        for u, s in by_url.items():
            mine = [v for seen, _ in vs for uu, v in seen.items() if uu == u]
            assert s.count == max(c for _, _, c in mine)
            assert s.first_seen == T0 + min(min(a, b) for a, b, _ in mine) * HOUR
            assert s.last_seen == T0 + max(max(a, b) for a, b, _ in mine) * HOUR
        assert set(final.detectors) == {d for _, ds in vs for d in ds}
        for name, score in final.detectors.items():
            assert score.p_fake == [ds[name] for _, ds in vs if name in ds][-1]  # the newest wins
        for seen, detectors in vs:
            idx.upsert(_version(seen, detectors))
        again = idx.get(media_id(1))
        assert again is not None and {s.canonical_url: s.count for s in again.sightings} == {
            u: s.count for u, s in by_url.items()
        }

    check()


def test_threads_sharing_one_index(index: SearchIndex) -> None:
    mid = index.upsert(record(1)).media_id

    def work(t: int) -> None:
        for i in range(50):
            index.add_sighting(mid, sighting(f"https://example.com/{i % 5}"))
            index.get(mid)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = index.get(mid)
    assert final is not None
    assert {s.canonical_url: s.count for s in final.sightings} == {f"https://example.com/{i}": 40 for i in range(5)}


# --- near duplicates ------------------------------------------------------------------------
def test_near_duplicates_basics(index: SearchIndex) -> None:
    base = int("f0" * 32, 16)
    r1 = index.upsert(record(1, pdq=[hex_of(base ^ 0b111, 256), hex_of(base ^ 0b1, 256)]))  # min distance 1
    r2 = index.upsert(record(2, pdq=[hex_of(base ^ (1 << 255), 256)], videohash="ffffffffffffffff"))  # distance 1
    index.upsert(record(3, pdq=[hex_of(~base & ((1 << 256) - 1), 256)], videohash="0000000000000000"))
    q = hex_of(base, 256)
    assert index.near_duplicates(q, 0) == []
    assert index.near_duplicates(q, 1) == sorted([(r1.media_id, 1), (r2.media_id, 1)])
    assert index.near_duplicates("fffffffffffffff0", 4, kind="videohash") == [(r2.media_id, 4)]
    assert index.near_duplicates(q, 1, kind="pdq_faces") == []
    # New frame hashes replace the old ones in the index.
    index.upsert(record(1, pdq=[hex_of(~base & ((1 << 256) - 1), 256)]))
    assert index.near_duplicates(q, 1) == [(r2.media_id, 1)]


@pytest.mark.parametrize(
    ("query", "radius", "kind"),
    [
        ("ab" * 32, -1, "pdq"),
        ("ab" * 8, 3, "pdq"),
        ("AB" * 32, 3, "pdq"),
        ("ab" * 32, 3, "videohash"),
        ("ab" * 8, 3, "md5"),
    ],
)
def test_near_duplicates_rejects_bad_queries(index: SearchIndex, query: str, radius: int, kind: str) -> None:
    with pytest.raises(ValueError):
        index.near_duplicates(query, radius, kind=kind)  # type: ignore[arg-type]


def _hash_sets(bits: int, max_flips: int) -> st.SearchStrategy[tuple[int, list[list[int]]]]:
    """A query and records whose hashes cluster around it, so every radius finds something."""
    full = (1 << bits) - 1
    near = st.lists(st.integers(0, bits - 1), max_size=max_flips).map(
        lambda positions: sum({1 << p for p in positions})
    )
    noise = st.one_of(near, near, st.integers(0, full))
    return st.tuples(
        st.integers(0, full),
        st.lists(st.lists(noise, min_size=1, max_size=4), min_size=1, max_size=12),
    ).map(lambda qt: (qt[0], [[qt[0] ^ mask for mask in masks] for masks in qt[1]]))


@pytest.mark.parametrize(("kind", "bits", "max_radius"), [("videohash", 64, 16), ("pdq", 256, 40)])
def test_near_duplicates_equal_brute_force(make_index: MakeIndex, kind: str, bits: int, max_radius: int) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=_hash_sets(bits, max_radius + 4), radius=st.integers(0, max_radius))
    def check(data: tuple[int, list[list[int]]], radius: int) -> None:
        query, groups = data
        idx = make_index()
        items: list[tuple[str, list[int]]] = []
        for n, hashes in enumerate(groups):
            hexes = [hex_of(h, bits) for h in hashes]
            r = record(n, videohash=hexes[0]) if kind == "videohash" else record(n, pdq=hexes)
            idx.upsert(r)
            items.append((r.media_id, hashes[:1] if kind == "videohash" else hashes))
        assert idx.near_duplicates(hex_of(query, bits), radius, kind=kind) == hamming.brute_force(query, items, radius)

    check()


def test_sqlite_scan_fallback_equals_lookup(tmp_path: Path) -> None:
    """Past max_keys the SQLite backend scans every hash; both paths must agree."""
    lookup = SqliteIndex(tmp_path / "a.sqlite3")
    scan = SqliteIndex(tmp_path / "b.sqlite3", max_keys=0)
    base = int("5a" * 32, 16)
    for n in range(20):
        r = record(n, pdq=[hex_of(base ^ ((1 << (n * 7 % 256)) * ((1 << n) - 1)) & ((1 << 256) - 1), 256)])
        lookup.upsert(r)
        scan.upsert(r)
    for radius in (0, 3, 15, 31, 64, 256):
        assert lookup.near_duplicates(hex_of(base, 256), radius) == scan.near_duplicates(hex_of(base, 256), radius)
    assert len(scan.near_duplicates(hex_of(base, 256), 256)) == 20
    lookup.close()
    scan.close()


# --- concurrency ----------------------------------------------------------------------------
SHARED_URL = "https://example.com/shared"


def _sighting_worker(backend: str, location: str, mid: str, worker: int, n: int, barrier: object) -> None:
    """Runs in a spawned process: ``n`` sightings (half on a shared URL) and a few detector upserts."""
    idx = _open(backend, location)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(n):
        url = SHARED_URL if i % 2 == 0 else f"https://example.com/w{worker}/{i % 10}"
        idx.add_sighting(mid, sighting(url, first=T0 + timedelta(seconds=i)))
        if i % 50 == 0:
            idx.upsert(record(0, detectors={f"d{worker}-{i}": 0.5}))
    idx.close()


def test_concurrent_processes_lose_nothing(backend: str, tmp_path: Path) -> None:
    first = _open(backend, str(tmp_path))
    mid = first.upsert(record(0)).media_id
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    n = 200
    procs = [ctx.Process(target=_sighting_worker, args=(backend, str(tmp_path), mid, w, n, barrier)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]  # an escaped "database is locked" would make it 1

    final = first.get(mid)
    drop(first)
    first.close()
    assert final is not None
    counts = {s.canonical_url: s.count for s in final.sightings}
    expected = {SHARED_URL: n} | {f"https://example.com/w{w}/{j}": n // 10 for w in range(2) for j in (1, 3, 5, 7, 9)}
    assert counts == expected
    assert set(final.detectors) == {f"d{w}-{i}" for w in range(2) for i in range(0, n, 50)}
    assert final.last_seen == T0 + timedelta(seconds=n - 1)


# --- factory --------------------------------------------------------------------------------
def test_open_index_from_settings(tmp_path: Path) -> None:
    idx = open_index(load_settings(data_dir=tmp_path))
    assert isinstance(idx, SearchIndex)
    idx.close()
    assert (tmp_path / "index.sqlite3").is_file()
    # Nothing listens there: a clear SearchIndexError, not a hang or a raw transport error.
    from deepwatch.embedded.processes import free_port

    with pytest.raises(SearchIndexError, match=r"127\.0\.0\.1"):
        open_index(load_settings(index_backend="elasticsearch", es_url=f"http://127.0.0.1:{free_port()}"))


def test_sqlite_upgrades_a_schema_5_index_in_place(tmp_path: Path) -> None:
    """An index written by schema 5 (no sighting columns; each record's JSON whole in ``docs.doc``) opens:
    its dashboard counts come from the documents it already holds, its records read back as they were
    written, and a URL hit on one updates it; a schema this code does not know is refused."""
    import sqlite3

    path = tmp_path / "index.sqlite3"
    scored = record(2, sightings=[sighting("https://b.example/1")]).model_copy(
        update={"fingerprints": Fingerprints(sha256=media_id(2), pdq=["ab" * 32], frame_times=[0.5]),
                "face_scores": [FaceScore(t=0.5, frame=0, box=[1, 2, 3, 4], scores={"meso4_df": 0.9}, score=0.9)]})
    with SqliteIndex(path) as idx:
        idx.upsert(record(1, sightings=[sighting("https://a.example/1", count=3), sighting("https://a.example/2")]))
        idx.upsert(scored)
        written = [idx.get(media_id(1)), idx.get(media_id(2))]
    assert written[1] is not None and written[1].face_scores and written[1].fingerprints.pdq
    conn = sqlite3.connect(path)  # back to schema 5: the columns dropped, each document whole again
    conn.execute("ALTER TABLE media DROP COLUMN sightings")
    conn.execute("ALTER TABLE media DROP COLUMN urls")
    conn.execute("UPDATE docs SET doc = json_patch(doc, (SELECT bulk FROM bulks b WHERE b.seq = docs.seq))")
    conn.execute("DROP TABLE bulks")
    conn.execute("DROP TABLE sighting_counts")
    conn.execute("DROP TABLE heads")
    conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SqliteIndex(path) as idx:
        assert [idx.get(media_id(1)), idx.get(media_id(2))] == written
        counts = idx.aggregate()
        assert (counts.sightings, counts.distinct_urls) == (5, 3)
        (head,) = idx.add_sightings([(media_id(2), sighting("https://b.example/1", count=2))])
        assert idx.aggregate().sightings == 7
        after = idx.get(media_id(2))
        assert after is not None and after.sightings[0].count == 3
        assert head == RecordHead.of(after)  # the head this first repost made
        assert (after.fingerprints, after.face_scores) == (scored.fingerprints, scored.face_scores)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("9",)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SearchIndexError, match="schema 99"):
        SqliteIndex(path)


def test_sqlite_counts_a_known_url_up_without_rewriting_the_record(tmp_path: Path) -> None:
    """A repost of a URL the record has, with its hints or none, changes that URL's row of sighting_counts and
    the record's media row only: the stored JSON (every sighting, tens of thousands at a viral clip's record)
    is neither read whole nor rewritten. A new record has no rows (a bulk import writes none): its first repost
    makes its head and a row for each of its URLs from the JSON. New hints or a new URL change what is searched:
    the record is rewritten, its JSON then holding the counts so far."""
    path = tmp_path / "index.sqlite3"
    viral = [sighting(f"https://b.example/{i}", title="a clip") for i in range(300)]
    with SqliteIndex(path) as idx:
        first = idx.upsert(record(1, sightings=viral, verdict="fake", score=0.9, detectors={"meso4": 0.9}))
        conn = idx._conn

        def doc() -> str:
            return conn.execute("SELECT doc FROM docs").fetchone()[0]

        def reposts(hours: int) -> list[tuple[str, Sighting]]:
            return [(media_id(1), sighting(f"https://b.example/{i}", first=T0 + hours * HOUR,
                                           title="a clip" if i % 2 else None)) for i in range(0, 300, 7)]

        assert conn.execute("SELECT count(*) FROM sighting_counts UNION ALL SELECT count(*) FROM heads").fetchall() == [
            (0,), (0,)]
        stored = doc()
        heads = idx.add_sightings(reposts(1))  # the first repost
        assert heads == [RecordHead.of(first)] * len(reposts(1))
        assert conn.execute("SELECT count(*) FROM sighting_counts UNION ALL SELECT count(*) FROM heads").fetchall() == [
            (300,), (1,)]
        assert doc() == stored
        idx.add_sightings(reposts(2))
        assert doc() == stored
        count, last = conn.execute("SELECT count, last_seen FROM sighting_counts WHERE canonical_url = ?",
                                   ("https://b.example/7",)).fetchone()
        assert (count, last) == (3, (T0 + 2 * HOUR).timestamp())
        after = idx.get(media_id(1))
        assert after is not None and after.last_seen == T0 + 2 * HOUR
        assert sum(s.count for s in after.sightings) == 300 + 2 * len(reposts(1)) == idx.aggregate().sightings

        renamed = sighting("https://b.example/7", first=T0 + 3 * HOUR, title="renamed")
        idx.add_sightings([(media_id(1), renamed)])
        assert doc() != stored and '"count":4' in doc()
        assert idx.get(media_id(1)) == merge.add_sightings(after, [renamed])


def test_sqlite_makes_missing_rows_of_a_rewritten_record_from_its_json(tmp_path: Path) -> None:
    """A record rewritten before any repost (upserted again with a new URL) has a head and a row for the URL that
    changed only: a repost of one of its other URLs makes the missing rows from the JSON, and counts up without a
    rewrite."""
    with SqliteIndex(tmp_path / "index.sqlite3") as idx:
        idx.upsert(record(2, sightings=[sighting("https://c.example/1"), sighting("https://c.example/2")]))
        conn = idx._conn
        idx.upsert(record(2, sightings=[sighting("https://c.example/3", first=T0 + HOUR)]))
        assert conn.execute("SELECT canonical_url FROM sighting_counts").fetchall() == [("https://c.example/3",)]
        before = idx.get(media_id(2))
        stored = conn.execute("SELECT doc FROM docs").fetchone()[0]
        repost = sighting("https://c.example/1", first=T0 + 2 * HOUR)
        (head,) = idx.add_sightings([(media_id(2), repost)])
        assert conn.execute("SELECT count(*) FROM sighting_counts").fetchone() == (3,)
        assert conn.execute("SELECT doc FROM docs").fetchone()[0] == stored
        assert before is not None and head == RecordHead.of(before)
        assert idx.get(media_id(2)) == merge.add_sightings(before, [repost])


def test_sqlite_upgrades_schema_8_heads(tmp_path: Path) -> None:
    """Schema 8 kept a head as the record's JSON: the upgrade drops those, and a record's next repost makes its head
    again (a result's JSON of its scores), its sighting rows kept."""
    import sqlite3

    path = tmp_path / "index.sqlite3"
    with SqliteIndex(path) as idx:
        idx.upsert(record(1, sightings=[sighting("https://a.example/1")], verdict="fake", score=0.9,
                          detectors={"meso4": 0.9}))
        idx.add_sightings([(media_id(1), sighting("https://a.example/1", first=T0 + HOUR))])
        before = idx.get(media_id(1))
    conn = sqlite3.connect(path)  # back to schema 8: the head as the record's JSON
    conn.execute("DROP TABLE heads")
    conn.execute("CREATE TABLE heads (seq INTEGER PRIMARY KEY, head TEXT NOT NULL)")
    conn.execute("INSERT INTO heads SELECT seq, '{\"media_id\":\"' || media_id || '\"}' FROM media")
    conn.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SqliteIndex(path) as idx:
        assert idx.get(media_id(1)) == before and before is not None
        assert idx._conn.execute("SELECT count(*) FROM heads").fetchone() == (0,)
        repost = sighting("https://a.example/1", first=T0 + 2 * HOUR)
        assert idx.add_sightings([(media_id(1), repost)]) == [RecordHead.of(before)]
        assert idx.get(media_id(1)) == merge.add_sightings(before, [repost])
        assert idx._conn.execute("SELECT count(*) FROM heads").fetchone() == (1,)
