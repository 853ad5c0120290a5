"""Conformance suite, part two: moderation search, cursors, dashboards, reviews and bulk writes.

The reference for every search is a plain Python filter and sort over the same records
(:func:`reference`), so the backends are checked against a definition, not against each other.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepwatch.contracts import ContractError, MediaRecord, Review, Sighting
from storage.index import SearchIndex, UnknownMedia
from storage.query import (
    HISTOGRAM_BINS,
    SearchQuery,
    descending,
    histogram_bin,
    percentile,
    searchable_text,
    sort_value,
    text_terms,
    to_query,
)
from tests.index_support import HOUR, T0, MakeIndex, media_id, record, sighting

PLATFORMS = ["youtube", "tiktok", "x", "reddit"]
SOURCES = ["crawl-a", "crawl-b", "submit"]
WORDS = ["election", "speech", "president", "cat", "interview", "leaked", "ceo", "concert"]
VERDICTS = ["fake", "uncertain", "real", "no_face", "error", None]
DETECTORS = ["mesonet", "xception"]


def corpus(n: int = 40, seed: int = 7) -> list[MediaRecord]:
    """Varied records: every filter has values to keep and to drop, scores tie, some are unscored."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first = T0 + timedelta(hours=rng.randrange(0, 96))
        sightings = [
            sighting(
                f"https://{rng.choice(PLATFORMS)}.example/{i}/{j}",
                first=first + j * HOUR,
                count=1 + (i + j) % 3,  # not from rng: the rest of the corpus stays as it was
                platform=rng.choice(PLATFORMS),
                source=rng.choice(SOURCES),
                title=" ".join(rng.sample(WORDS, 2)) if rng.random() < 0.8 else None,
                uploader=f"user{rng.randrange(5)}" if rng.random() < 0.5 else None,
                text=rng.choice(WORDS) if rng.random() < 0.3 else None,
            )
            for j in range(rng.randrange(1, 3))
        ]
        verdict = rng.choice(VERDICTS)
        detectors = {d: rng.choice([0.0, 0.1, 0.5, 0.9, 1.0, rng.random()]) for d in DETECTORS if rng.random() < 0.7}
        score = None if verdict is None else rng.choice([0.25, 0.75, round(rng.random(), 3)])
        out.append(
            record(
                i,
                sightings=sightings,
                detectors=detectors,
                first=first,
                last=max(s.last_seen for s in sightings),
                kind=rng.choice(["image", "video"]),
                verdict=verdict,
                error="boom" if verdict == "error" else None,
                score=score,
                dedup=rng.choice(["none", "url", "exact"]),
                review=Review(label=rng.choice(["fake", "real", "unsure"]), reviewer="mod", at=T0)
                if rng.random() < 0.3
                else None,
                timings={"fetch": round(rng.random() * 5, 3), "score": round(rng.random(), 3)}
                if rng.random() < 0.8
                else {},
            )
        )
    return out


def matches(r: MediaRecord, q: SearchQuery) -> bool:
    """The definition of a search, one record at a time."""
    if q.verdict and (r.verdict or "unscored") not in q.verdict:
        return False
    if q.score is not None and (r.score is None or not q.score.min <= r.score <= q.score.max):
        return False
    for name, bounds in q.detectors.items():
        d = r.detectors.get(name)
        if d is None or not bounds.min <= d.p_fake <= bounds.max:
            return False
    if q.platform and not {s.platform for s in r.sightings} & set(q.platform):
        return False
    if q.source and not {s.source for s in r.sightings} & set(q.source):
        return False
    if q.kind and r.kind not in q.kind:
        return False
    if q.dedup and r.dedup not in q.dedup:
        return False
    if q.review and (r.review.label if r.review else "none") not in q.review:
        return False
    if q.seen_since and r.last_seen < q.seen_since:
        return False
    if q.seen_until and r.first_seen > q.seen_until:
        return False
    return not (q.text and not set(text_terms(q.text)) <= set(text_terms(searchable_text(r))))


def reference(records: list[MediaRecord], q: SearchQuery) -> list[str]:
    hits = [r for r in records if matches(r, q)]
    hits.sort(key=lambda r: (sort_value(r, q.sort), r.media_id), reverse=descending(q.sort))
    return [r.media_id for r in hits]


def all_pages(index: SearchIndex, q: SearchQuery) -> tuple[list[str], set[int]]:
    ids: list[str] = []
    totals = set()
    page = index.search(q)
    while True:
        ids += [r.media_id for r in page.items]
        totals.add(page.total)
        if page.next is None:
            return ids, totals
        page = index.search(q.model_copy(update={"cursor": page.next}))


ranges = st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5]), st.sampled_from([0.5, 0.75, 0.9, 1.0]))
queries = st.builds(
    dict,
    text=st.one_of(st.none(), st.sampled_from([*WORDS, "election speech", "user1", "YOUTUBE", "nothing-here"])),
    verdict=st.lists(st.sampled_from(["fake", "uncertain", "real", "error", "unscored"]), max_size=2),
    score=st.one_of(st.none(), ranges.map(lambda r: {"min": r[0], "max": r[1]})),
    detectors=st.dictionaries(st.sampled_from(DETECTORS), ranges.map(lambda r: {"min": r[0], "max": r[1]}), max_size=1),
    platform=st.lists(st.sampled_from(PLATFORMS), max_size=2),
    source=st.lists(st.sampled_from(SOURCES), max_size=1),
    kind=st.lists(st.sampled_from(["image", "video"]), max_size=1),
    dedup=st.lists(st.sampled_from(["none", "url", "exact"]), max_size=2),
    review=st.lists(st.sampled_from(["none", "fake", "real", "unsure"]), max_size=2),
    seen_since=st.one_of(st.none(), st.integers(0, 96).map(lambda h: T0 + h * HOUR)),
    seen_until=st.one_of(st.none(), st.integers(96, 120).map(lambda h: T0 + h * HOUR)),
    sort=st.sampled_from(["score_desc", "score_asc", "newest", "oldest"]),
    limit=st.sampled_from([1, 4, 50]),
)


def test_search_equals_the_reference(make_index: MakeIndex) -> None:
    """Any mix of filters, any sort, any page size: the pages, joined, are exactly the reference."""
    records = corpus()
    index = make_index()
    index.upsert_many(records)

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fields=queries)
    def check(fields: dict) -> None:
        q = to_query(**fields)
        ids, totals = all_pages(index, q)
        expected = reference(records, q)
        assert ids == expected
        assert totals == {len(expected)}

    check()


def test_search_finds_something_for_common_filters(index: SearchIndex) -> None:
    """Guards the test above against a corpus where every query is empty."""
    records = corpus()
    index.upsert_many(records)
    for fields in ({}, {"text": "election"}, {"verdict": ["fake"]}, {"platform": ["x"], "text": "speech"}):
        q = to_query(**fields)
        assert index.search(q).total == len(reference(records, q)) > 0


def test_text_is_words_not_syntax(index: SearchIndex) -> None:
    index.upsert(record(1, sightings=[sighting("https://x.example/1", title="The CEO's speech (leaked)")]))
    found = [media_id(1)]
    cases = {"ceo": found, "CEO speech": found, "speech, leaked!": found, "ceo's": found, "speech*": found,
             '"speech" OR': [], "NEAR(ceo speech)": []}  # "or" and "near" are words the record lacks
    for text, expected in cases.items():
        assert [r.media_id for r in index.search(to_query(text=text)).items] == expected, text
    assert index.search(to_query(text="CEO speech")).total == 1
    assert index.search(to_query(text="speech OR nothing")).total == 0  # OR is a word that must occur
    for text in ["'; DROP TABLE media; --", "\" ) OR 1=1 --", "a:b", "^start", "x AND"]:
        assert index.search(to_query(text=text)).total == 0, text
    assert index.search(to_query()).total == 1


def test_pages_stay_stable_while_records_arrive(index: SearchIndex) -> None:
    records = corpus(30)
    index.upsert_many(records)
    q = to_query(sort="score_desc", limit=4)
    expected = reference(records, q)
    page = index.search(q)
    seen = [r.media_id for r in page.items]
    n = 1000
    while page.next is not None:
        # New records that would sort in the middle of every page, and a new sighting of an old one.
        index.upsert(record(n, score=0.5, verdict="uncertain", sightings=[sighting(f"https://new.example/{n}")]))
        n += 1
        page = index.search(q.model_copy(update={"cursor": page.next}))
        assert page.total == len(expected)
        seen += [r.media_id for r in page.items]
    assert seen == expected
    assert index.search(q).total == len(expected) + (n - 1000)


def test_cursor_of_another_query_is_refused(index: SearchIndex) -> None:
    index.upsert_many(corpus(10))
    page = index.search(to_query(limit=2))
    assert page.next is not None
    with pytest.raises(ContractError) as err:
        index.search(to_query(limit=2, verdict=["fake"], cursor=page.next))
    assert err.value.fields == ["cursor"]
    for bad in ["nonsense", "eyJhIjoxfQ", "!!!"]:
        with pytest.raises(ContractError) as err:
            index.search(to_query(cursor=bad))
        assert err.value.fields == ["cursor"]
    # The same filters with another page size are the same search: the cursor holds.
    assert index.search(to_query(limit=5, cursor=page.next)).total == 10


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_000}, "limit"),
        ({"score": {"min": 0.9, "max": 0.1}}, "score"),
        ({"verdict": ["maybe"]}, "verdict.0"),
        ({"platform": ["Not A Slug"]}, "platform.0"),
        ({"detectors": {"mesonet": {"min": -1}}}, "detectors.mesonet.min"),
        ({"sort": "random"}, "sort"),
        ({"seen_since": "yesterday"}, "seen_since"),
        ({"text": "x" * 501}, "text"),
        ({"text": "bell\x07"}, "text"),
        ({"text": "((( ...!"}, "text"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_search_input_names_the_field(fields: dict, bad: str) -> None:
    with pytest.raises(ContractError) as err:
        to_query(**fields)
    assert err.value.fields == [bad]


# --- dashboards -----------------------------------------------------------------------------
def expected_aggregations(records: list[MediaRecord], q: SearchQuery) -> dict:
    hits = [r for r in records if matches(r, q)]
    by_verdict: dict[str, int] = {}
    by_platform: dict[str, int] = {}
    by_day: dict[str, int] = {}
    histogram = [0] * HISTOGRAM_BINS
    stages: dict[str, list[float]] = {}
    by_dedup: dict[str, int] = {}
    for r in hits:
        by_dedup[r.dedup] = by_dedup.get(r.dedup, 0) + 1
        by_verdict[r.verdict or "unscored"] = by_verdict.get(r.verdict or "unscored", 0) + 1
        for p in {s.platform for s in r.sightings}:
            by_platform[p] = by_platform.get(p, 0) + 1
        day = r.first_seen.strftime("%Y-%m-%d")
        by_day[day] = by_day.get(day, 0) + 1
        if r.score is not None:
            histogram[histogram_bin(r.score)] += 1
        for stage, seconds in r.timings.items():
            stages.setdefault(stage, []).append(seconds)
    return {
        "total": len(hits),
        "by_verdict": by_verdict,
        "by_platform": by_platform,
        "by_day": by_day,
        "score_histogram": histogram,
        "stages": {k: sorted(v) for k, v in stages.items()},
        "by_dedup": by_dedup,
        "sightings": sum(s.count for r in hits for s in r.sightings),
        "distinct_urls": sum(len(r.sightings) for r in hits),
    }


@pytest.mark.parametrize("fields", [{}, {"platform": ["youtube"]}, {"text": "election", "verdict": ["fake", "real"]}])
def test_aggregations_equal_the_reference(index: SearchIndex, fields: dict) -> None:
    records = corpus(60)
    index.upsert_many(records)
    q = to_query(**fields)
    agg = index.aggregate(q)
    want = expected_aggregations(records, q)
    assert agg.total == want["total"] > 0
    assert agg.by_verdict == want["by_verdict"]
    assert agg.by_platform == want["by_platform"]
    assert agg.by_day == want["by_day"]
    assert agg.score_histogram == want["score_histogram"]
    assert agg.by_dedup == want["by_dedup"]
    assert (agg.sightings, agg.distinct_urls) == (want["sightings"], want["distinct_urls"])
    assert set(agg.stage_seconds) == set(want["stages"])
    for stage, values in want["stages"].items():
        got = agg.stage_seconds[stage]
        assert got.count == len(values)
        # Elasticsearch's percentiles are estimates (t-digest): close, not equal.
        for p in (50, 90, 99):
            assert getattr(got, f"p{p}") == pytest.approx(percentile(values, p), rel=0.05, abs=0.05)


def test_dedup_savings_figures(index: SearchIndex) -> None:
    """The dashboard's savings: sightings beyond distinct URLs were downloads avoided."""
    index.upsert(record(1, sightings=[sighting("https://a.example/1", count=3), sighting("https://b.example/1")]))
    index.upsert(record(2, sightings=[sighting("https://a.example/2", count=2)], dedup="near", duplicate_of=media_id(1)))
    # a count left unset (as most sightings are built) is stored without it, and still counts one
    unset = Sighting(url="https://c.example/3", canonical_url="https://c.example/3", source="s", platform="web",
                     first_seen=T0, last_seen=T0)
    index.upsert(record(3, sightings=[unset], dedup="exact"))
    agg = index.aggregate()
    assert agg.by_dedup == {"none": 1, "near": 1, "exact": 1}
    assert (agg.sightings, agg.distinct_urls) == (7, 4)
    narrowed = index.aggregate(to_query(dedup=["near"]))
    assert (narrowed.by_dedup, narrowed.sightings, narrowed.distinct_urls) == ({"near": 1}, 2, 1)
    assert index.aggregate(to_query(dedup=["exact"])).sightings == 1
    empty = index.aggregate(to_query(dedup=["url"]))
    assert (empty.total, empty.by_dedup, empty.sightings, empty.distinct_urls) == (0, {}, 0, 0)


def test_histogram_edges(index: SearchIndex) -> None:
    for n, score in enumerate([0.0, 0.0999, 0.1, 0.5, 0.9999, 1.0]):
        index.upsert(record(n, score=score, verdict="real"))
    index.upsert(record("unscored"))
    agg = index.aggregate()
    assert agg.score_histogram == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert agg.total == 7 and agg.by_verdict == {"real": 6, "unscored": 1}
    assert agg.stage_seconds == {}


# --- reviews --------------------------------------------------------------------------------
def test_reviews_leave_an_audit_trail(index: SearchIndex) -> None:
    r = index.upsert(record(1, score=0.9, verdict="fake", sightings=[sighting("https://x.example/1")]))
    first = Review(label="unsure", reviewer="alice", at=T0, note="looks odd")
    second = Review(label="fake", reviewer="bob", at=T0 + HOUR)
    index.record_review(r.media_id, first)
    reviewed = index.record_review(r.media_id, second)
    assert reviewed.review == second
    assert index.get(r.media_id) == reviewed
    history = index.review_history(r.media_id)
    assert [(e.review, e.previous) for e in history] == [(first, "none"), (second, "unsure")]
    assert index.review_history(media_id("other")) == []
    # A worker's later upsert (no review) keeps the human's call.
    index.upsert(record(1, score=0.2, verdict="real"))
    kept = index.get(r.media_id)
    assert kept is not None and kept.review == second and kept.verdict == "real"
    assert [x.media_id for x in index.search(to_query(review=["fake"])).items] == [r.media_id]
    assert index.search(to_query(review=["none"])).total == 0
    with pytest.raises(UnknownMedia):
        index.record_review(media_id("nothing"), first)


# --- bulk writes ----------------------------------------------------------------------------
def test_upsert_many_equals_one_by_one(make_index: MakeIndex) -> None:
    records = corpus(25)
    # Repeats within one batch, and a second version of a record, merge like separate upserts.
    later = record(3, sightings=[sighting("https://later.example/3", first=T0 + 200 * HOUR)], detectors={"new": 0.4})
    batch = [*records, records[3], later, records[7]]
    bulk, single = make_index(), make_index()
    assert bulk.upsert_many(batch) == len(batch)
    for r in batch:
        single.upsert(r)
    for r in records:
        assert bulk.get(r.media_id) == single.get(r.media_id)
    merged = bulk.get(media_id(3))
    assert merged is not None and "new" in merged.detectors and len(merged.sightings) == len(records[3].sightings) + 1
    assert bulk.find_by_canonical_url("https://later.example/3") == merged
    assert bulk.upsert_many([]) == 0
    q = to_query(sort="newest")
    assert all_pages(bulk, q) == all_pages(single, q)


def test_verdict_filter_covers_every_verdict() -> None:
    from typing import get_args

    from deepwatch.contracts import Verdict
    from storage.query import VerdictFilter

    assert set(get_args(VerdictFilter)) == set(get_args(Verdict)) | {"unscored"}


def test_sqlite_search_plans_agree(make_index: MakeIndex, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite pages a text search by sorting its matches, or, past SORT_MATCHES_LIMIT, by walking
    the sort index: both plans must give the reference answer."""
    if backend != "sqlite":
        pytest.skip("a plan of the SQLite backend")
    import storage.index_sqlite

    records = corpus()
    index = make_index()
    index.upsert_many(records)
    monkeypatch.setattr(storage.index_sqlite, "SORT_MATCHES_LIMIT", 0)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fields=queries)
    def check(fields: dict) -> None:
        q = to_query(**fields)
        assert all_pages(index, q) == (reference(records, q), {len(reference(records, q))})

    check()


FIXED_QUERIES = [
    {},
    {"text": "election"},
    {"text": "speech cat"},
    {"verdict": ["fake", "uncertain"], "platform": ["youtube"], "text": "speech"},
    {"platform": ["x", "reddit"], "sort": "newest"},
    {"platform": ["x", "x"], "source": ["submit", "submit"]},  # repeated values mean the same as one
    {"source": ["submit"], "review": ["none"], "sort": "score_asc"},
    {"review": ["fake", "real"], "text": "interview", "sort": "oldest"},
    {"score": {"min": 0.5, "max": 1.0}, "kind": ["video"]},
    {"detectors": {"mesonet": {"min": 0.5, "max": 1.0}}, "text": "ceo"},
]


def test_search_follows_writes_between_searches(make_index: MakeIndex) -> None:
    """One index, searched, then written to (new sightings with new words and platforms, reviews,
    new detector scores, new records), then searched again: every answer equals the reference over
    the records as they are now. A backend that caches anything between searches must keep up."""
    records = corpus(60)
    index = make_index()
    index.upsert_many(records[:40])
    queries = [to_query(**fields, limit=7) for fields in FIXED_QUERIES]
    for q in queries:
        index.search(q)
    rng = random.Random(11)
    ids = [r.media_id for r in records[:40]]
    for step in range(3):
        for mid in rng.sample(ids, 6):
            url = f"https://reddit.example/rewrite/{step}/{mid[:8]}"
            index.add_sighting(mid, sighting(url, first=T0 + 120 * HOUR, platform=rng.choice(PLATFORMS),
                                             source="submit", title=" ".join(rng.sample(WORDS, 2))))
        # Known URLs seen again: counts and times only (the hit path's cheap rewrite), then with new
        # hints, whose words the text search must find from then on.
        again = []
        for i, mid in enumerate(rng.sample(ids, 8)):
            known = rng.choice(index.get(mid).sightings)  # type: ignore[union-attr]
            again.append((mid, sighting(known.canonical_url, first=T0 + (121 + step) * HOUR, count=2,
                                        platform=known.platform, source=known.source,
                                        title="encore " + rng.choice(WORDS) if i % 2 else None)))
        index.add_sightings(again)
        for mid in rng.sample(ids, 4):
            index.record_review(mid, Review(label=rng.choice(["fake", "real", "unsure"]), reviewer="mod"))
        for n in rng.sample(range(40), 4):
            index.upsert(record(n, detectors={"mesonet": rng.random()}))
        fresh = records[40 + step * 6 : 46 + step * 6]
        index.upsert_many(fresh)
        ids += [r.media_id for r in fresh]
        current = [index.get(mid) for mid in ids]
        for q in queries:
            found, totals = all_pages(index, q)
            expected = reference(current, q)
            assert found == expected, q
            assert totals == {len(expected)}
        assert all_pages(index, to_query(text="encore"))[0] == reference(current, to_query(text="encore")) != []
        late = to_query(seen_since=T0 + (121 + step) * HOUR)
        assert sorted(all_pages(index, late)[0]) == sorted(reference(current, late)) != []
        want = expected_aggregations(current, to_query())
        agg = index.aggregate()
        assert (agg.total, agg.sightings, agg.distinct_urls) == (want["total"], want["sightings"], want["distinct_urls"])


def test_many_distinct_platforms_and_sources(index: SearchIndex) -> None:
    """More distinct values than a 64-bit mask holds (the SQLite mirror then answers in SQL)."""
    records = [
        record(i, sightings=[sighting(f"https://p{i}.example/{i}", platform=f"p{i}", source=f"s{i}", title="clip")])
        for i in range(70)
    ]
    index.upsert_many(records)
    for i in (0, 63, 64, 69):
        for field, value in (("platform", f"p{i}"), ("source", f"s{i}")):
            page = index.search(to_query(**{field: [value], "text": "clip"}))
            assert [r.media_id for r in page.items] == [media_id(i)], (field, value)
    assert index.search(to_query(platform=["p1", "p65"])).total == 2
    assert index.aggregate().by_platform == {f"p{i}": 1 for i in range(70)}
