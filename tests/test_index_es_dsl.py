"""The pure parts of the Elasticsearch index backend, checked without a server.

Mappings, documents, query DSL and the parsing of answers are plain functions in
``storage.index_es``; these tests pin what they build. Whether Elasticsearch answers them as
intended is the conformance suite's job (tests/test_index.py, against a live cluster when
``DEEPWATCH_TEST_ES_URL`` is set).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deepwatch.contracts import (
    ContractError,
    DetectorScore,
    Fingerprints,
    Hints,
    MediaInfo,
    MediaRecord,
    Review,
    Sighting,
    StoredObjects,
)
from deepwatch.settings import load_settings
from storage import hamming
from storage import index_es as es
from storage.index import HASH_KINDS
from storage.query import (
    HISTOGRAM_BINS,
    UNSCORED,
    SearchQuery,
    decode_cursor,
    encode_cursor,
    histogram_bin,
    sort_value,
    stage_times,
    text_terms,
    to_query,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
HOUR = timedelta(hours=1)


# --- builders -------------------------------------------------------------------------------
def media_id(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def minimal_record(n: int = 0) -> MediaRecord:
    mid = media_id(n)
    return MediaRecord(media_id=mid, kind="image", fingerprints=Fingerprints(sha256=mid), first_seen=T0, last_seen=T0)


def full_record() -> MediaRecord:
    """A record with every field set, so that the document builder emits every derived field."""
    mid = media_id("full")
    return MediaRecord(
        media_id=mid,
        kind="video",
        fingerprints=Fingerprints(
            sha256=mid, videohash="0123456789abcdef", pdq=["ab" * 32, "cd" * 32, "ab" * 32], pdq_faces=["0f" * 32]
        ),
        sightings=[
            Sighting(
                url="https://www.example.com/watch?v=It's_1.5",
                canonical_url="https://example.com/v/1",
                source="crawler-a",
                platform="web",
                first_seen=T0,
                last_seen=T0 + HOUR,
                count=3,
                hints=Hints(title="Président speaks", uploader="news.desk", posted_at=T0, text="full text here"),
            ),
            Sighting(
                url="https://social.example.org/p/2",
                canonical_url="https://social.example.org/p/2",
                source="crawler-b",
                platform="social",
                first_seen=T0 - HOUR,
                last_seen=T0 + 2 * HOUR,
            ),
            Sighting(
                url="https://example.com/v/3",
                canonical_url="https://example.com/v/3",
                source="crawler-a",
                platform="web",
                first_seen=T0,
                last_seen=T0,
            ),
        ],
        first_seen=T0 - HOUR,
        last_seen=T0 + 2 * HOUR,
        dedup="near",
        duplicate_of=media_id("other"),
        variant_of=media_id("variant"),
        detectors={
            "mesonet": DetectorScore(p_fake=0.83, model_version="meso-1", frames=12),
            "xception": DetectorScore(p_fake=0.1, model_version="x-2"),
        },
        score=0.7,
        verdict="fake",
        error=None,
        review=Review(label="fake", reviewer="mod@example.com", at=T0, note="checked"),
        objects=StoredObjects(media="media/ab/cd", thumbnail="thumb/ab/cd", result="result/ab/cd"),
        media=MediaInfo(duration=12.5, width=1280, height=720, fps=29.97, bytes=123456, codec="h264"),
        timings={"fetch": 1.25, "detect": 3.5},
    )


def document(record: MediaRecord) -> dict[str, Any]:
    return es.media_document(
        record, indexed_at=1_700_000_000_000, written_at=1_700_000_000_000_000_000, write_token="t"
    )


# --- walking dicts --------------------------------------------------------------------------
def document_paths(value: Any, path: str = "") -> Iterator[str]:
    """Every field path in a document (lists are transparent, as they are to Elasticsearch)."""
    if isinstance(value, list):
        for item in value:
            yield from document_paths(item, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from document_paths(item, f"{path}.{key}" if path else key)
    elif path:
        yield path


def mapping_of(mappings: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The mapping that covers ``path``; a non-indexed object covers everything below it."""
    properties = mappings["properties"]
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = properties.get(part)
        if field is None:
            return None
        if field.get("enabled") is False or i == len(parts) - 1:
            return field
        properties = field.get("properties", {})
    return None


def keys_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_in(item)


def strings_in(value: Any) -> Iterator[tuple[str, str]]:
    """``(parent key, string)`` for every string value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield key, item
            elif isinstance(item, list) and all(isinstance(v, str) for v in item):
                yield from ((key, v) for v in item)
            else:
                yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


# Query and aggregation types the backend may emit; anything else (query_string, script, wildcard,
# regexp ...) would be a place where a user string could be read as syntax.
CLAUSE_TYPES = {"bool", "filter", "term", "terms", "range", "match", "nested", "exists"}


def fields_in_query(query: Any) -> Iterator[str]:
    """Field names a query reads, nested paths included."""
    if isinstance(query, list):
        for item in query:
            yield from fields_in_query(item)
        return
    if not isinstance(query, dict):
        return
    for clause, spec in query.items():
        if clause in ("term", "terms", "range", "match"):
            yield from spec
        elif clause == "exists":
            yield spec["field"]
        elif clause == "nested":
            yield spec["path"]
            yield from fields_in_query(spec["query"])
        else:
            yield from fields_in_query(spec)


def fields_in_aggs(aggs: dict[str, Any]) -> Iterator[str]:
    for spec in aggs.values():
        for kind, body in spec.items():
            if kind == "aggs":
                yield from fields_in_aggs(body)
            elif "field" in body:
                yield body["field"]
            elif "path" in body:
                yield body["path"]


def fields_in_sort(sort: list[dict[str, Any]]) -> Iterator[str]:
    for item in sort:
        yield from item


EVERY_FILTER: dict[str, Any] = {
    "text": "Président, speaks!",
    "verdict": ["fake", "unscored"],
    "score": {"min": 0.5, "max": 0.9},
    "detectors": {"mesonet": {"min": 0.2, "max": 1.0}, "xception": {"min": 0.0, "max": 0.4}},
    "platform": ["web", "social"],
    "source": ["crawler-a"],
    "kind": ["video"],
    "dedup": ["none", "near"],
    "review": ["none", "fake"],
    "seen_since": T0 - HOUR,
    "seen_until": T0 + HOUR,
}


# --- names and mappings ---------------------------------------------------------------------
def test_names() -> None:
    names = es.IndexNames("deepwatch", "media")
    assert (names.alias, names.index, names.pattern, names.template) == (
        "deepwatch-media",
        "deepwatch-media-v1",
        "deepwatch-media-v*",
        "deepwatch-media-template",
    )
    for bad in ("", "Deepwatch", "-x", "a b", "a*", "a/b", "x" * 65):
        with pytest.raises(ValueError):
            es.IndexNames(bad, "media")


def test_template_body() -> None:
    names = es.IndexNames("dw", "media")
    body = es.template_body(names, es.media_mappings(), es.media_settings())
    assert body["name"] == "dw-media-template"
    assert body["index_patterns"] == ["dw-media-v*"]
    assert body["priority"] > 100  # above the built-in logs-*-*/metrics-*-* templates
    assert body["template"]["mappings"] == es.media_mappings()
    analyzer = body["template"]["settings"]["analysis"]["analyzer"][es.WORDS_ANALYZER]
    assert analyzer == {"type": "custom", "tokenizer": "whitespace"}


@pytest.mark.parametrize("mappings", [es.media_mappings(), es.review_mappings()], ids=["media", "reviews"])
def test_mappings_are_strict_and_explicit(mappings: dict[str, Any]) -> None:
    assert mappings["dynamic"] == "strict"

    def check(properties: dict[str, Any], path: str) -> None:
        for name, field in properties.items():
            here = f"{path}.{name}" if path else name
            assert "type" in field, here  # every field typed, nothing left to inference
            assert "dynamic" not in field, here  # nested objects inherit strict
            if field["type"] in ("object", "nested") and field.get("enabled", True):
                check(field["properties"], here)

    check(mappings["properties"], "")


def test_stored_record_is_not_indexed() -> None:
    assert es.media_mappings()["properties"]["doc"] == {"type": "object", "enabled": False}
    assert es.review_mappings()["properties"]["review"] == {"type": "object", "enabled": False}


@pytest.mark.parametrize("record", [minimal_record(), full_record()], ids=["minimal", "full"])
def test_every_document_field_is_mapped(record: MediaRecord) -> None:
    """Catches drift: a field added to the document builder but not to the strict mapping would be
    refused by Elasticsearch on the first write."""
    mappings = es.media_mappings()
    paths = set(document_paths(document(record)))
    unmapped = sorted(p for p in paths if mapping_of(mappings, p) is None)
    assert unmapped == []


def test_full_document_uses_every_mapped_field() -> None:
    """The other direction: a mapped field the builder no longer emits is dead weight."""
    emitted = {p.split(".")[0] for p in document_paths(document(full_record()))}
    assert set(es.media_mappings()["properties"]) == emitted


def test_every_review_document_field_is_mapped() -> None:
    event = es.review_document(
        media_id(1),
        Review(label="real", reviewer="mod", at=T0, note="n"),
        previous="none",
        recorded_at=1,
        primary_term=1,
        seq_no=7,
    )
    mappings = es.review_mappings()
    assert sorted(p for p in document_paths(event) if mapping_of(mappings, p) is None) == []
    assert set(mappings["properties"]) == {p.split(".")[0] for p in document_paths(event)}
    back = es.review_event_of(json.loads(json.dumps(event)))
    assert (back.media_id, back.review, back.previous) == (
        media_id(1),
        Review(label="real", reviewer="mod", at=T0, note="n"),
        "none",
    )


# --- documents ------------------------------------------------------------------------------
@pytest.mark.parametrize("record", [minimal_record(), full_record()], ids=["minimal", "full"])
def test_document_round_trips(record: MediaRecord) -> None:
    # Through JSON, as it travels to the cluster and back in _source.
    source = json.loads(json.dumps(document(record)))
    back = es.record_of(source)
    assert back == record
    assert back.model_dump_json() == record.model_dump_json()


def test_record_of_a_broken_document() -> None:
    with pytest.raises(es.SearchIndexError):
        es.record_of({"doc": {"media_id": "nope"}})
    with pytest.raises(es.SearchIndexError):
        es.record_of({})


def test_derived_fields_of_an_empty_record() -> None:
    doc = document(minimal_record())
    assert doc["verdict"] == "unscored"
    assert doc["score"] is None
    assert doc["score_sort"] == UNSCORED
    assert doc["score_bin"] is None
    assert doc["review_label"] == "none"
    assert doc["platforms"] == doc["sources"] == doc["canonical_urls"] == []
    assert doc["detectors"] == doc["timings"] == []
    assert doc["text"] == ""
    for kind in HASH_KINDS:
        assert doc[es.hash_field(kind)] == doc[es.chunk_field(kind)] == []


def test_derived_fields_of_a_full_record() -> None:
    r = full_record()
    doc = document(r)
    assert (doc["media_id"], doc["kind"], doc["verdict"], doc["dedup"]) == (r.media_id, "video", "fake", "near")
    assert doc["score"] == doc["score_sort"] == 0.7
    assert doc["score_bin"] == histogram_bin(0.7) == 7
    assert doc["review_label"] == "fake"
    assert doc["platforms"] == ["social", "web"]
    assert doc["sources"] == ["crawler-a", "crawler-b"]
    assert doc["canonical_urls"] == [s.canonical_url for s in r.sightings]
    assert doc["sighting_total"] == sum(s.count for s in r.sightings)
    assert doc["sighting_urls"] == len(r.sightings)
    assert doc["first_seen_epoch"] == sort_value(r, "newest") == r.first_seen.timestamp()
    assert doc["last_seen_epoch"] == r.last_seen.timestamp()
    assert doc["first_seen"] == "2026-01-02T02:04:05.123+00:00"
    assert doc["last_seen"] == "2026-01-02T05:04:05.123+00:00"
    assert doc["detectors"] == [{"name": "mesonet", "p_fake": 0.83}, {"name": "xception", "p_fake": 0.1}]
    assert doc["timings"] == [{"stage": "fetch", "seconds": 1.25}, {"stage": "detect", "seconds": 3.5}]
    assert (doc["indexed_at"], doc["written_at"], doc["write_token"]) == (
        1_700_000_000_000,
        1_700_000_000_000_000_000,
        "t",
    )


def test_document_text_is_cut_like_query_text() -> None:
    doc = document(full_record())
    tokens = doc["text"].split(" ")
    # URLs, titles, uploaders and post text, each cut at every non-word character, lower-cased.
    for word in ("www", "example", "com", "watch", "it", "s", "1", "5", "président", "news", "desk", "full", "social"):
        assert word in tokens
    assert "example.com" not in tokens
    assert all(t == t.lower() and t for t in tokens)
    # A query for any part of the stored text becomes exactly the stored terms.
    for text in ("example.com", "It's_1", "Président", "news.desk v 1"):
        assert set(text_terms(text)) <= set(tokens)


@pytest.mark.parametrize(
    "text",
    ["Hello, World!", "it's_1.5 x", "ÉCOLE  naïve—ΣΊΣΥΦΟΣ", "a\tb\nc", " ".join(f"w{i}" for i in range(40)), "@@@"],
)
def test_words_agree_with_text_terms(text: str) -> None:
    assert es.words(text)[:32] == text_terms(text)


@pytest.mark.parametrize("kind", list(HASH_KINDS))
def test_chunk_keys(kind: str) -> None:
    r = full_record()
    doc = document(r)
    spec = HASH_KINDS[kind]
    hashes = {
        "videohash": [r.fingerprints.videohash],
        "pdq": r.fingerprints.pdq,
        "pdq_faces": r.fingerprints.pdq_faces,
    }[kind]
    assert doc[es.hash_field(kind)] == hashes
    expected = {k for h in hashes for k in hamming.index_keys(hamming.parse_hash(h, spec), spec)}
    assert doc[es.chunk_field(kind)] == [str(k) for k in sorted(expected)]
    # Each stored hash is found by its own radius-0 lookup.
    for h in hashes:
        keys = hamming.query_keys(hamming.parse_hash(h, spec), 0, spec)
        assert keys is not None and {str(k) for k in keys} <= set(doc[es.chunk_field(kind)])


# --- search filters -------------------------------------------------------------------------
DETECTOR_CLAUSE = {
    "nested": {
        "path": "detectors",
        "query": {
            "bool": {
                "filter": [
                    {"term": {"detectors.name": "mesonet"}},
                    {"range": {"detectors.p_fake": {"gte": 0.5, "lte": 1.0}}},
                ]
            }
        },
    }
}


@pytest.mark.parametrize(
    ("fields", "clause"),
    [
        pytest.param(
            {"text": "Hello, WORLD! it's"},
            {"match": {"text": {"query": "hello world it s", "operator": "and"}}},
            id="text",
        ),
        pytest.param({"verdict": ["fake", "unscored"]}, {"terms": {"verdict": ["fake", "unscored"]}}, id="verdict"),
        pytest.param({"platform": ["web", "x.com"]}, {"terms": {"platforms": ["web", "x.com"]}}, id="platform"),
        pytest.param({"source": ["crawler-a"]}, {"terms": {"sources": ["crawler-a"]}}, id="source"),
        pytest.param({"kind": ["image"]}, {"terms": {"kind": ["image"]}}, id="kind"),
        pytest.param({"dedup": ["exact", "near"]}, {"terms": {"dedup": ["exact", "near"]}}, id="dedup"),
        pytest.param({"review": ["none", "unsure"]}, {"terms": {"review_label": ["none", "unsure"]}}, id="review"),
        pytest.param(
            {"score": {"min": 0.25, "max": 0.75}}, {"range": {"score": {"gte": 0.25, "lte": 0.75}}}, id="score"
        ),
        pytest.param({"score": {}}, {"range": {"score": {"gte": 0.0, "lte": 1.0}}}, id="score-default-bounds"),
        pytest.param({"detectors": {"mesonet": {"min": 0.5}}}, DETECTOR_CLAUSE, id="detector"),
        pytest.param({"seen_since": T0}, {"range": {"last_seen_epoch": {"gte": T0.timestamp()}}}, id="seen_since"),
        pytest.param({"seen_until": T0}, {"range": {"first_seen_epoch": {"lte": T0.timestamp()}}}, id="seen_until"),
    ],
)
def test_each_filter_maps_to_its_clause(fields: dict[str, Any], clause: dict[str, Any]) -> None:
    assert es.filter_clauses(to_query(**fields)) == [clause]


def test_no_filter_matches_everything() -> None:
    assert es.filter_clauses(SearchQuery()) == []
    assert es.filter_query(None) == {"bool": {"filter": []}}
    assert es.filter_query(SearchQuery(sort="oldest", limit=3)) == {"bool": {"filter": []}}


def test_every_filter_at_once() -> None:
    clauses = es.filter_clauses(to_query(**EVERY_FILTER))
    kinds = [next(iter(c)) for c in clauses]
    assert kinds.count("nested") == 2
    assert len(clauses) == 12  # text, 6 lists, score, 2 detectors, since, until


def test_every_field_a_request_reads_is_mapped() -> None:
    """Catches drift the other way: a filter, sort or aggregation on a field the mapping lacks
    would silently match nothing (or fail) on a real cluster."""
    mappings = es.media_mappings()
    query = to_query(**EVERY_FILTER)
    bodies = [
        es.build_search_body(query),
        es.build_search_body(query, after=[0.5, media_id(1)], snapshot=5),
        es.build_aggregate_body(query),
        es.canonical_url_body("https://example.com/a"),
        *(
            es.scan_body(es.near_duplicate_query(kind, keys), [{"media_id": "asc"}], [es.hash_field(kind)], None)
            for kind in HASH_KINDS
            for keys in (None, [1, 2])
        ),
    ]
    read: set[str] = set()
    for body in bodies:
        read |= set(fields_in_query(body["query"]))
        read |= set(fields_in_sort(body.get("sort", [])))
        read |= set(fields_in_aggs(body.get("aggs", {})))
        read |= set(body.get("_source", []))
    assert read >= {"text", "verdict", "score", "detectors.p_fake", "timings.seconds", "indexed_at", "written_at"}
    assert sorted(f for f in read if mapping_of(mappings, f) is None) == []
    for sort in es.SORT_FIELDS.values():
        assert mapping_of(mappings, sort) == {"type": "double"}

    reviews, sort = es.review_history_query(media_id(1))
    read = set(fields_in_query(reviews)) | set(fields_in_sort(sort)) | set(es.REVIEW_EVENT_FIELDS)
    assert sorted(f for f in read if mapping_of(es.review_mappings(), f) is None) == []


HOSTILE = '"}}, {"script": {"source": "ctx._source.x=1"}} OR *:* AND _id:* \\" <b>'


def test_user_strings_are_only_values() -> None:
    query = to_query(**{**EVERY_FILTER, "text": HOSTILE})
    body = es.build_search_body(query)
    # Only the clause types the backend means to send: nothing that parses syntax or runs code.
    clause_keys = set(keys_in(body["query"])) - {"query", "operator", "path", "gte", "lte"}
    field_names = set(fields_in_query(body["query"]))
    assert clause_keys - field_names <= CLAUSE_TYPES
    # The hostile text reaches the cluster as words, in the one place free text goes.
    for _key, value in strings_in(body):
        assert "script" not in value or value == " ".join(text_terms(HOSTILE))
    match = [c for c in body["query"]["bool"]["filter"] if "match" in c]
    assert match == [{"match": {"text": {"query": " ".join(text_terms(HOSTILE)), "operator": "and"}}}]
    assert not any(ch in match[0]["match"]["text"]["query"] for ch in '"{}:*\\<>')
    # No key anywhere comes from user input.
    user_words = set(text_terms(HOSTILE))
    assert not (set(keys_in(body)) & user_words - {"source", "query"})


def test_url_is_only_a_term_value() -> None:
    odd = "https://example.com/it's%20'quoted'?q=1;DROP%20TABLE%20media;--&x=_%*"
    body = es.canonical_url_body(odd)
    assert body["query"] == {"bool": {"filter": [{"term": {"canonical_urls": odd}}]}}
    assert body["sort"] == [{"written_at": "desc"}, {"media_id": "asc"}]
    assert body["size"] == 1



def test_urls_are_looked_up_many_to_a_request() -> None:
    urls = ["https://example.com/a", "https://example.com/b"]
    searches = es.canonical_url_searches(urls)
    # _msearch's newline-delimited pairs: a header (the index comes from the request), then each URL's search
    assert searches[0::2] == [{}, {}]
    assert [s["query"] for s in searches[1::2]] == [es.canonical_url_body(u)["query"] for u in urls]
    assert all(s["_source"] is False and s["size"] == 1 for s in searches[1::2])

    def answer(*ids: str) -> dict[str, Any]:
        return {"hits": {"hits": [{"_id": i, "_score": None} for i in ids]}, "status": 200}

    assert es.media_ids_of_url_searches(urls, [answer(media_id(1)), answer()]) == {urls[0]: media_id(1)}
    # a lookup that failed is an index error, never "unknown URL" (the worker would fetch and score it again)
    failed = {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 503}
    with pytest.raises(es.SearchIndexError, match="all shards failed"):
        es.media_ids_of_url_searches(urls, [answer(media_id(1)), failed])
    with pytest.raises(es.SearchIndexError, match="1 of 2"):
        es.media_ids_of_url_searches(urls, [answer()])

# --- search pages ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sort", "field", "order"),
    [
        ("score_desc", "score_sort", "desc"),
        ("score_asc", "score_sort", "asc"),
        ("newest", "first_seen_epoch", "desc"),
        ("oldest", "first_seen_epoch", "asc"),
    ],
)
def test_sort_clause(sort: str, field: str, order: str) -> None:
    # Ties on media_id in the same direction: the reference sorts (sort value, media_id) reversed.
    assert es.sort_clause(SearchQuery(sort=sort)) == [{field: {"order": order}}, {"media_id": {"order": order}}]


def test_page_one_body() -> None:
    query = to_query(platform=["web"], limit=20)
    body = es.build_search_body(query)
    assert body["size"] == 21  # one more than asked: tells whether there is a next page
    assert body["track_total_hits"] is True
    assert "search_after" not in body
    assert body["aggs"] == {"snapshot": {"max": {"field": "indexed_at"}}}
    assert body["query"] == {"bool": {"filter": [{"terms": {"platforms": ["web"]}}]}}
    assert body["_source"] == ["doc"]


def test_later_page_body() -> None:
    query = to_query(platform=["web"], limit=20)
    body = es.build_search_body(query, after=[0.5, media_id(3)], snapshot=1234)
    assert body["search_after"] == [0.5, media_id(3)]
    assert "aggs" not in body
    assert body["query"]["bool"]["filter"] == [
        {"terms": {"platforms": ["web"]}},
        {"range": {"indexed_at": {"lte": 1234}}},
    ]


def _hit(record: MediaRecord, sort: SearchQuery) -> dict[str, Any]:
    return {
        "_id": record.media_id,
        "_source": {"doc": record.model_dump(mode="json")},
        "sort": [sort_value(record, sort.sort), record.media_id],
    }


def test_parse_page_one_with_more_to_come() -> None:
    query = to_query(limit=2)
    records = [minimal_record(n) for n in range(3)]
    response = {
        "hits": {"total": {"value": 7, "relation": "eq"}, "hits": [_hit(r, query) for r in records]},
        "aggregations": {"snapshot": {"value": 1.7e15}},
    }
    page = es.parse_search(query, response, snapshot=None)
    assert page.total == 7
    assert page.items == records[:2]
    assert page.next is not None
    after, snapshot = es.cursor_of(query.model_copy(update={"cursor": page.next}))  # type: ignore[misc]
    assert after == [UNSCORED, records[1].media_id]
    assert snapshot == 1_700_000_000_000_000 and isinstance(snapshot, int)


def test_parse_last_page() -> None:
    query = to_query(limit=2)
    records = [minimal_record(n) for n in range(2)]
    response = {"hits": {"total": {"value": 2, "relation": "eq"}, "hits": [_hit(r, query) for r in records]}}
    page = es.parse_search(query, response, snapshot=99)
    assert (page.total, page.items, page.next) == (2, records, None)
    empty = es.parse_search(
        query, {"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {"snapshot": {"value": None}}}, None
    )
    assert (empty.total, empty.items, empty.next) == (0, [], None)


def test_later_page_keeps_the_snapshot() -> None:
    query = to_query(limit=1)
    records = [minimal_record(n) for n in range(2)]
    response = {"hits": {"total": {"value": 5}, "hits": [_hit(r, query) for r in records]}}
    page = es.parse_search(query, response, snapshot=42)
    assert decode_cursor(query.model_copy(update={"cursor": page.next})) == ([UNSCORED, records[0].media_id], 42)


def _forged(query: SearchQuery, data: dict[str, Any]) -> str:
    raw = json.dumps({"q": query.filters_digest(), **data}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_cursors_are_checked() -> None:
    query = to_query(platform=["web"])
    good = encode_cursor(query, after=[0.5, media_id(1)], snapshot=10)
    assert es.cursor_of(query.model_copy(update={"cursor": good})) == ([0.5, media_id(1)], 10)
    assert es.cursor_of(query) is None
    other = to_query(platform=["social"]).model_copy(update={"cursor": good})
    with pytest.raises(ContractError) as info:
        es.cursor_of(other)
    assert info.value.fields == ["cursor"]
    for data in (
        {"a": [0.5], "s": 10},
        {"a": [{"script": "x"}, media_id(1)], "s": 10},
        {"a": [True, media_id(1)], "s": 10},
        {"a": [0.5, 3], "s": 10},
        {"a": [0.5, media_id(1)], "s": "10"},
        {"a": [0.5, media_id(1)], "s": None},
    ):
        with pytest.raises(ContractError) as info:
            es.cursor_of(query.model_copy(update={"cursor": _forged(query, data)}))
        assert info.value.fields == ["cursor"]


# --- aggregations ---------------------------------------------------------------------------
def test_aggregate_body() -> None:
    body = es.build_aggregate_body(to_query(kind=["video"], sort="oldest", limit=3))
    assert body["size"] == 0 and body["track_total_hits"] is True
    assert body["query"] == {"bool": {"filter": [{"terms": {"kind": ["video"]}}]}}
    aggs = body["aggs"]
    assert aggs["by_verdict"]["terms"]["field"] == "verdict"
    assert aggs["by_platform"]["terms"]["field"] == "platforms"
    assert aggs["by_dedup"]["terms"]["field"] == "dedup"
    assert aggs["sightings"] == {"sum": {"field": "sighting_total"}}
    assert aggs["distinct_urls"] == {"sum": {"field": "sighting_urls"}}
    assert aggs["by_day"]["date_histogram"] == {
        "field": "first_seen",
        "calendar_interval": "day",
        "time_zone": "UTC",
        "format": "yyyy-MM-dd",
        "min_doc_count": 1,
    }
    assert aggs["score_bins"]["terms"] == {"field": "score_bin", "size": HISTOGRAM_BINS}
    assert aggs["timings"]["nested"] == {"path": "timings"}
    stages = aggs["timings"]["aggs"]["stages"]
    assert stages["terms"]["field"] == "timings.stage"
    assert stages["aggs"]["seconds"]["percentiles"] == {
        "field": "timings.seconds",
        "percents": [50, 90, 99],
        "keyed": False,
    }
    assert es.build_aggregate_body(None)["query"] == {"bool": {"filter": []}}


def test_parse_aggregations() -> None:
    fetch = [0.5, 1.0, 2.0, 4.0]
    expected_fetch = stage_times(fetch)
    response = {
        "hits": {"total": {"value": 4, "relation": "eq"}},
        "aggregations": {
            "by_verdict": {"buckets": [{"key": "fake", "doc_count": 3}, {"key": "unscored", "doc_count": 1}]},
            "by_platform": {"buckets": [{"key": "web", "doc_count": 4}, {"key": "social", "doc_count": 1}]},
            "by_dedup": {"buckets": [{"key": "none", "doc_count": 3}, {"key": "near", "doc_count": 1}]},
            "sightings": {"value": 9.0},
            "distinct_urls": {"value": 5.0},
            "by_day": {"buckets": [{"key": 1767312000000, "key_as_string": "2026-01-02", "doc_count": 4}]},
            "score_bins": {"buckets": [{"key": 9, "doc_count": 2}, {"key": 0, "doc_count": 1}]},
            "timings": {
                "doc_count": 4,
                "stages": {
                    "buckets": [
                        {
                            "key": "fetch",
                            "doc_count": 4,
                            "seconds": {
                                "values": [
                                    {"key": 50.0, "value": expected_fetch.p50},
                                    {"key": 90.0, "value": expected_fetch.p90},
                                    {"key": 99.0, "value": expected_fetch.p99},
                                ]
                            },
                        }
                    ]
                },
            },
        },
    }
    aggs = es.parse_aggregations(response)
    assert aggs.total == 4
    assert aggs.by_verdict == {"fake": 3, "unscored": 1}
    assert aggs.by_platform == {"web": 4, "social": 1}
    assert aggs.by_day == {"2026-01-02": 4}
    assert aggs.score_histogram == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert aggs.stage_seconds == {"fetch": expected_fetch}
    assert aggs.by_dedup == {"none": 3, "near": 1}
    assert (aggs.sightings, aggs.distinct_urls) == (9, 5)


def test_score_bins_match_histogram_bin() -> None:
    for score in (0.0, 0.1, 0.3, 0.7, 0.99999, 1.0):
        r = minimal_record().model_copy(update={"score": score})
        assert document(r)["score_bin"] == histogram_bin(score)
    assert document(minimal_record().model_copy(update={"score": 1.0}))["score_bin"] == HISTOGRAM_BINS - 1


# --- near duplicates and reviews ------------------------------------------------------------
def test_near_duplicate_query() -> None:
    spec = HASH_KINDS["pdq"]
    keys = hamming.query_keys(int("ab" * 32, 16), 31, spec)
    assert keys is not None
    query = es.near_duplicate_query("pdq", keys)
    assert query == {"bool": {"filter": [{"terms": {"chunks_pdq": [str(k) for k in keys]}}]}}
    assert len(keys) <= hamming.DEFAULT_MAX_KEYS < 65_536  # index.max_terms_count
    assert es.near_duplicate_query("videohash", None) == {
        "bool": {"filter": [{"exists": {"field": "hashes_videohash"}}]}
    }


def test_indexed_at_survives_the_max_aggregation() -> None:
    """The snapshot comes back from a max aggregation as a double: epoch microseconds stay exact
    (below 2**53) for centuries."""
    far = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp() * 1_000_000) + 1
    assert far < 2**53 and int(float(far)) == far


def test_scan_body() -> None:
    body = es.scan_body({"match_all": {}}, [{"media_id": "asc"}], ["hashes_pdq"], None)
    assert "search_after" not in body and body["size"] == es.SCAN_PAGE <= 10_000
    assert es.scan_body({"match_all": {}}, [{"media_id": "asc"}], [], ["x"])["search_after"] == ["x"]


def test_review_history_is_in_commit_order() -> None:
    query, sort = es.review_history_query(media_id(1))
    assert query == {"bool": {"filter": [{"term": {"media_id": media_id(1)}}]}}
    assert sort == [{"primary_term": "asc"}, {"seq_no": "asc"}]


# --- client ---------------------------------------------------------------------------------
def _settings(**fields: Any) -> Any:
    return load_settings(index_backend="elasticsearch", **fields)


def test_client_with_basic_auth(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a TLS connection is made")
    client = es.client_from_settings(
        _settings(
            es_url="https://a.example:9200, https://b.example:9200", es_username="dw", es_password="pw", es_ca_certs=ca
        )
    )
    nodes = client.transport.node_pool.all()
    assert sorted(n.config.host for n in nodes) == ["a.example", "b.example"]
    assert all(n.config.ca_certs == str(ca) for n in nodes)
    assert client._headers["authorization"] == "Basic " + base64.b64encode(b"dw:pw").decode()
    client.close()


def test_client_with_api_key() -> None:
    client = es.client_from_settings(
        _settings(es_url="http://127.0.0.1:9200", es_api_key="a2V5", es_username="ignored")
    )
    assert client._headers["authorization"] == "ApiKey a2V5"
    client.close()


def test_client_without_credentials() -> None:
    client = es.client_from_settings(_settings(es_url="http://127.0.0.1:9200"))
    assert "authorization" not in client._headers
    client.close()
