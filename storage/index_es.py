"""The production search index on Elasticsearch 8, through the official ``elasticsearch`` client.

Layout. Every read and write goes through an alias (``<prefix>-media``) that points at a versioned
index (``<prefix>-media-v1``) created from an index template (``<prefix>-media-template``, pattern
``<prefix>-media-v*``) with explicit, ``dynamic: strict`` mappings; a later mapping change that is
not additive becomes ``-v2``, a reindex and an alias swap, with no caller noticing. The audit trail
of reviews lives the same way in ``<prefix>-reviews``. Both are created idempotently on
construction, so several processes may start at once.

Documents. The record itself is stored whole under ``doc`` (an object with ``enabled: false``: kept
in ``_source``, never parsed or indexed), so it round-trips exactly through
``MediaRecord.model_validate``. Beside it sit fields derived from it only to filter, sort and
aggregate on; they are rebuilt from the record on every write, so they cannot drift from it.

Writes are read-merge-write with optimistic concurrency: read the document with its
``_seq_no``/``_primary_term``, merge in Python (``storage.merge``, as every backend does), and write
it back only if nobody wrote in between (``if_seq_no``; ``op_type=create`` for a new one). On a 409
the whole step runs again from a fresh read, so two workers on one record never lose each other's
sightings or detector scores.

Read-your-writes. ``get`` is real-time in Elasticsearch; searches see a write only after a refresh.
Writes therefore pass ``refresh="wait_for"`` by default (the call returns once a search can see it;
up to ``index.refresh_interval``, 1 s by default). Tests may pass ``refresh=True`` (faster, one
refresh per write); a bulk loader that needs no read-your-writes may pass ``refresh=False``.

The module is split into pure functions that build every request body and parse every answer
(tested without a server in tests/test_index_es_dsl.py) and the :class:`ElasticsearchIndex` that
sends them.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from elasticsearch import ApiError, BadRequestError, ConflictError, Elasticsearch, NotFoundError, TransportError
from pydantic import ValidationError

from deepwatch.contracts import MediaRecord, Review, Sighting
from storage import hamming, merge
from storage.index import (
    HASH_KINDS,
    HashKind,
    RecordHead,
    SearchIndexError,
    UnknownMedia,
    changed_record,
    record_hashes,
)
from storage.query import (
    HISTOGRAM_BINS,
    PERCENTILES,
    Aggregations,
    ReviewEvent,
    SearchPage,
    SearchQuery,
    StageTimes,
    decode_cursor,
    descending,
    encode_cursor,
    histogram_bin,
    searchable_text,
    sort_value,
    text_terms,
)
from storage.query import WORD_PATTERN as QUERY_WORD  # the very pattern text_terms cuts queries with

if TYPE_CHECKING:
    from deepwatch.settings import Settings

# The -v<N> of the concrete indices; bump it (and reindex) for a mapping change that is not additive.
SCHEMA_VERSION = 1
# Above the built-in templates (logs-*-*, metrics-*-* ... use 100), so a prefix like "logs" still gets ours.
TEMPLATE_PRIORITY = 500
PREFIX_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MEDIA_ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# A conflict means another writer made progress, so retrying converges; the bound only stops a
# livelock from hanging a worker forever.
MAX_ATTEMPTS = 200
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.1
BULK_BATCH = 500  # records per mget + bulk round trip
SCAN_PAGE = 5_000  # hits per search_after page when every match is needed (below max_result_window)
MAX_TERM_BUCKETS = 10_000  # platforms or stages in one terms aggregation (below search.max_buckets)
UNSCORED_VERDICT = "unscored"
NO_REVIEW = "none"
WORDS_ANALYZER = "deepwatch_words"

# Which derived field each sort order sorts on.
SORT_FIELDS = {
    "score_desc": "score_sort",
    "score_asc": "score_sort",
    "newest": "first_seen_epoch",
    "oldest": "first_seen_epoch",
}


# --- names ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexNames:
    """The alias, concrete index and template of one logical index (``media`` or ``reviews``)."""

    prefix: str
    name: str

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"index prefix {self.prefix!r} must match {PREFIX_PATTERN.pattern}")

    @property
    def alias(self) -> str:
        return f"{self.prefix}-{self.name}"

    @property
    def index(self) -> str:
        return f"{self.alias}-v{SCHEMA_VERSION}"

    @property
    def pattern(self) -> str:
        return f"{self.alias}-v*"

    @property
    def template(self) -> str:
        return f"{self.alias}-template"


# --- mappings ---------------------------------------------------------------------------------
_KEYWORD = {"type": "keyword"}
_DOUBLE = {"type": "double"}
_LONG = {"type": "long"}
_DATE = {"type": "date"}
_STORED_ONLY = {"type": "object", "enabled": False}


def hash_field(kind: str) -> str:
    """The raw hashes of one kind (hex), read back for the exact distance check."""
    return f"hashes_{kind}"


def chunk_field(kind: str) -> str:
    """The multi-index-hashing keys of one kind (``hamming.index_keys``), as keyword terms: term
    lookups on keyword are what Lucene's inverted index is fastest at."""
    return f"chunks_{kind}"


def media_mappings() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "doc": _STORED_ONLY,
        "media_id": _KEYWORD,
        "kind": _KEYWORD,
        "verdict": _KEYWORD,
        "score": _DOUBLE,
        "score_sort": _DOUBLE,
        "score_bin": {"type": "integer"},
        "dedup": _KEYWORD,
        "review_label": _KEYWORD,
        "platforms": _KEYWORD,
        "sources": _KEYWORD,
        "canonical_urls": _KEYWORD,
        # For the dashboard's dedup savings: summed by aggregations (documents written before these
        # fields existed count as 0 until they are written again).
        "sighting_total": {"type": "long"},
        "sighting_urls": {"type": "integer"},
        "first_seen": _DATE,
        "last_seen": _DATE,
        "first_seen_epoch": _DOUBLE,
        "last_seen_epoch": _DOUBLE,
        # Pre-tokenised in Python (see words()); positions and norms are never used: filters only.
        "text": {"type": "text", "analyzer": WORDS_ANALYZER, "index_options": "docs", "norms": False},
        "detectors": {"type": "nested", "properties": {"name": _KEYWORD, "p_fake": _DOUBLE}},
        "timings": {"type": "nested", "properties": {"stage": _KEYWORD, "seconds": _DOUBLE}},
        "indexed_at": _LONG,
        "written_at": _LONG,
        "write_token": {"type": "keyword", "index": False, "doc_values": False},
    }
    for kind in HASH_KINDS:
        properties[hash_field(kind)] = _KEYWORD
        properties[chunk_field(kind)] = _KEYWORD
    return {"dynamic": "strict", "properties": properties}


def media_settings() -> dict[str, Any]:
    # Stored text and query text are both tokenised by words() in Python, so the index only splits
    # on the spaces between words: both sides then see exactly the same terms (the standard
    # analyzer would keep "example.com" or "it's" whole, where text_terms splits them).
    return {"analysis": {"analyzer": {WORDS_ANALYZER: {"type": "custom", "tokenizer": "whitespace"}}}}


def review_mappings() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "media_id": _KEYWORD,
            "review": _STORED_ONLY,  # the Review as given, for an exact round trip
            "label": _KEYWORD,
            "reviewer": _KEYWORD,
            "previous": _KEYWORD,
            "recorded_at": _DATE,
            # The media document's _primary_term/_seq_no after the write that set this review: the
            # order in which reviews of one record were committed, whatever the clocks said.
            "primary_term": _LONG,
            "seq_no": _LONG,
        },
    }


def template_body(names: IndexNames, mappings: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``indices.put_index_template``."""
    return {
        "name": names.template,
        "index_patterns": [names.pattern],
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": settings, "mappings": mappings},
        "meta": {"managed_by": "deepwatch", "schema_version": SCHEMA_VERSION},
    }


# --- documents --------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """Every word of ``text`` the way :func:`storage.query.text_terms` cuts a query (without its
    cap on the number of words), so a query word matches a stored word exactly."""
    return [w.lower() for w in QUERY_WORD.findall(text)]


def _unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def _iso_millis(moment: datetime) -> str:
    # Elasticsearch's date type keeps milliseconds; the exact instant is in first/last_seen_epoch.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def media_document(record: MediaRecord, *, indexed_at: int, written_at: int, write_token: str = "") -> dict[str, Any]:
    """The stored document: the record under ``doc`` plus the fields derived from it.

    ``indexed_at`` (epoch µs) is when the document was first created and bounds what a cursor's
    pages can see (µs rather than ms: a record created in the millisecond after page one must still
    fall outside the bound; below 2**53, so the max aggregation's double keeps it exact);
    ``written_at`` (epoch ns) is its last write, for find_by_canonical_url;
    ``write_token`` identifies the write (see ElasticsearchIndex._read_merge_write).
    """
    document: dict[str, Any] = {
        "doc": record.model_dump(mode="json"),
        "media_id": record.media_id,
        "kind": record.kind,
        "verdict": record.verdict or UNSCORED_VERDICT,
        "score": record.score,
        "score_sort": sort_value(record, "score_desc"),
        "score_bin": None if record.score is None else histogram_bin(record.score),
        "dedup": record.dedup,
        "review_label": record.review.label if record.review else NO_REVIEW,
        "platforms": _unique(s.platform for s in record.sightings),
        "sources": _unique(s.source for s in record.sightings),
        "canonical_urls": [s.canonical_url for s in record.sightings],
        "sighting_total": sum(s.count for s in record.sightings),
        "sighting_urls": len(record.sightings),
        "first_seen": _iso_millis(record.first_seen),
        "last_seen": _iso_millis(record.last_seen),
        "first_seen_epoch": sort_value(record, "oldest"),
        "last_seen_epoch": record.last_seen.timestamp(),
        "text": " ".join(words(searchable_text(record))),
        "detectors": [{"name": name, "p_fake": score.p_fake} for name, score in record.detectors.items()],
        "timings": [{"stage": stage, "seconds": seconds} for stage, seconds in record.timings.items()],
        "indexed_at": indexed_at,
        "written_at": written_at,
        "write_token": write_token,
    }
    for kind, spec in HASH_KINDS.items():
        hashes = record_hashes(record, kind)
        keys = {k for h in hashes for k in hamming.index_keys(hamming.parse_hash(h, spec), spec)}
        document[hash_field(kind)] = hashes
        document[chunk_field(kind)] = [str(k) for k in sorted(keys)]
    return document


def record_of(source: Mapping[str, Any]) -> MediaRecord:
    """The record stored in a document's ``_source``."""
    try:
        return MediaRecord.model_validate(source["doc"])
    except (KeyError, ValidationError) as exc:
        raise SearchIndexError(f"stored document is not a MediaRecord: {exc}") from exc


def review_document(
    media_id: str, review: Review, *, previous: str, recorded_at: int, primary_term: int, seq_no: int
) -> dict[str, Any]:
    """One audit event; ``primary_term``/``seq_no`` are the media document's after the review's write."""
    return {
        "media_id": media_id,
        "review": review.model_dump(mode="json"),
        "label": review.label,
        "reviewer": review.reviewer,
        "previous": previous,
        "recorded_at": recorded_at,
        "primary_term": primary_term,
        "seq_no": seq_no,
    }


def review_event_of(source: Mapping[str, Any]) -> ReviewEvent:
    return ReviewEvent(media_id=source["media_id"], review=source["review"], previous=source["previous"])


# --- queries ----------------------------------------------------------------------------------
# Every clause below takes its values from the typed SearchQuery fields, and user strings only
# ever land as a value (of a term, terms, range or match): never as a field name, a script or
# query-string syntax.
def _terms(field: str, values: list[str]) -> dict[str, Any]:
    return {"terms": {field: list(values)}}


def _range(field: str, *, gte: float | None = None, lte: float | None = None) -> dict[str, Any]:
    bounds = {k: v for k, v in (("gte", gte), ("lte", lte)) if v is not None}
    return {"range": {field: bounds}}


def _detector_clause(name: str, low: float, high: float) -> dict[str, Any]:
    # Nested, so that name and p_fake are matched on the same detector entry.
    inner = [{"term": {"detectors.name": name}}, _range("detectors.p_fake", gte=low, lte=high)]
    return {"nested": {"path": "detectors", "query": {"bool": {"filter": inner}}}}


def filter_clauses(query: SearchQuery) -> list[dict[str, Any]]:
    """One clause per filter the query sets; the records match all of them."""
    clauses: list[dict[str, Any]] = []
    if query.text is not None:
        words_query = " ".join(text_terms(query.text))
        clauses.append({"match": {"text": {"query": words_query, "operator": "and"}}})
    for field, values in (
        ("verdict", query.verdict),
        ("platforms", query.platform),
        ("sources", query.source),
        ("kind", query.kind),
        ("dedup", query.dedup),
        ("review_label", query.review),
    ):
        if values:
            clauses.append(_terms(field, values))
    if query.score is not None:
        # Unscored records have no score field, so any score range leaves them out.
        clauses.append(_range("score", gte=query.score.min, lte=query.score.max))
    for name, bounds in query.detectors.items():
        clauses.append(_detector_clause(name, bounds.min, bounds.max))
    if query.seen_since is not None:
        clauses.append(_range("last_seen_epoch", gte=query.seen_since.timestamp()))
    if query.seen_until is not None:
        clauses.append(_range("first_seen_epoch", lte=query.seen_until.timestamp()))
    return clauses


def filter_query(query: SearchQuery | None, snapshot: int | None = None) -> dict[str, Any]:
    clauses = [] if query is None else filter_clauses(query)
    if snapshot is not None:
        clauses.append(_range("indexed_at", lte=snapshot))
    return {"bool": {"filter": clauses}}


def sort_clause(query: SearchQuery) -> list[dict[str, Any]]:
    # Ties break on media_id in the same direction, as the SQLite backend and the reference do.
    order = "desc" if descending(query.sort) else "asc"
    return [{SORT_FIELDS[query.sort]: {"order": order}}, {"media_id": {"order": order}}]


def build_search_body(query: SearchQuery, after: list[Any] | None = None, snapshot: int | None = None) -> dict:
    """One page: ``limit + 1`` hits, the extra one only telling whether a next page exists.

    Page one (no ``after``) also asks for the largest ``indexed_at`` among the matches: the
    snapshot that later pages are bounded by, so records created after page one never show up.
    """
    body: dict[str, Any] = {
        "query": filter_query(query, snapshot),
        "sort": sort_clause(query),
        "size": query.limit + 1,
        "track_total_hits": True,
        "_source": ["doc"],
    }
    if after is None:
        body["aggs"] = {"snapshot": {"max": {"field": "indexed_at"}}}
    else:
        body["search_after"] = after
    return body


def cursor_of(query: SearchQuery) -> tuple[list[Any], int] | None:
    """``(search_after, snapshot)`` from the query's cursor; ``decode_cursor`` refuses a malformed
    one before it reaches the cluster."""
    return decode_cursor(query)


def parse_search(query: SearchQuery, response: Mapping[str, Any], snapshot: int | None) -> SearchPage:
    hits = response["hits"]["hits"]
    if snapshot is None:  # page one: the bound is what this page could see
        value = response.get("aggregations", {}).get("snapshot", {}).get("value")
        snapshot = None if value is None else int(value)
    items = [record_of(hit["_source"]) for hit in hits[: query.limit]]
    more = len(hits) > query.limit
    cursor = encode_cursor(query, after=hits[query.limit - 1]["sort"], snapshot=snapshot) if more else None
    return SearchPage(total=response["hits"]["total"]["value"], items=items, next=cursor)


def build_aggregate_body(query: SearchQuery | None) -> dict[str, Any]:
    return {
        "query": filter_query(query),
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "by_verdict": {"terms": {"field": "verdict", "size": MAX_TERM_BUCKETS}},
            "by_platform": {"terms": {"field": "platforms", "size": MAX_TERM_BUCKETS}},
            "by_dedup": {"terms": {"field": "dedup", "size": MAX_TERM_BUCKETS}},
            "sightings": {"sum": {"field": "sighting_total"}},
            "distinct_urls": {"sum": {"field": "sighting_urls"}},
            "by_day": {
                "date_histogram": {
                    "field": "first_seen",
                    "calendar_interval": "day",
                    "time_zone": "UTC",
                    "format": "yyyy-MM-dd",
                    "min_doc_count": 1,
                }
            },
            # The bin is computed in Python (histogram_bin) at write time, so bin edges are exactly
            # the ones every backend uses; unscored records have no bin.
            "score_bins": {"terms": {"field": "score_bin", "size": HISTOGRAM_BINS}},
            "timings": {
                "nested": {"path": "timings"},
                "aggs": {
                    "stages": {
                        "terms": {"field": "timings.stage", "size": MAX_TERM_BUCKETS},
                        # Exact (linear interpolation between closest ranks, as storage.query) up to
                        # 2,000 values per stage on Elasticsearch >= 8.9, a t-digest estimate above.
                        "aggs": {
                            "seconds": {
                                "percentiles": {
                                    "field": "timings.seconds",
                                    "percents": list(PERCENTILES),
                                    "keyed": False,
                                }
                            }
                        },
                    }
                },
            },
        },
    }


def _buckets(aggregation: Mapping[str, Any], key: str = "key") -> dict[str, int]:
    return {str(b[key]): b["doc_count"] for b in aggregation["buckets"]}


def _stage_times(bucket: Mapping[str, Any]) -> StageTimes:
    values = {float(v["key"]): v["value"] for v in bucket["seconds"]["values"]}
    p50, p90, p99 = (values[float(p)] for p in PERCENTILES)
    return StageTimes(count=bucket["doc_count"], p50=p50, p90=p90, p99=p99)


def parse_aggregations(response: Mapping[str, Any]) -> Aggregations:
    aggs = response["aggregations"]
    histogram = [0] * HISTOGRAM_BINS
    for bucket in aggs["score_bins"]["buckets"]:
        histogram[int(bucket["key"])] = bucket["doc_count"]
    return Aggregations(
        total=response["hits"]["total"]["value"],
        by_verdict=_buckets(aggs["by_verdict"]),
        by_platform=_buckets(aggs["by_platform"]),
        by_day=_buckets(aggs["by_day"], key="key_as_string"),
        score_histogram=histogram,
        stage_seconds={b["key"]: _stage_times(b) for b in aggs["timings"]["stages"]["buckets"]},
        by_dedup=_buckets(aggs["by_dedup"]),
        # a sum aggregation answers a double (0.0 over no documents)
        sightings=int(aggs["sightings"]["value"] or 0),
        distinct_urls=int(aggs["distinct_urls"]["value"] or 0),
    )


def canonical_url_body(url: str) -> dict[str, Any]:
    """The record last written with a sighting at ``url`` (what SQLite's url table points at)."""
    return {
        "query": {"bool": {"filter": [{"term": {"canonical_urls": url}}]}},
        "sort": [{"written_at": "desc"}, {"media_id": "asc"}],
        "size": 1,
        "_source": ["doc"],
    }


URL_SEARCHES_PER_REQUEST = 250  # canonical-URL lookups sent in one _msearch (a batch may ask for thousands)


def canonical_url_searches(urls: Sequence[str]) -> list[dict[str, Any]]:
    """An ``_msearch`` body for ``urls``: a header and :func:`canonical_url_body` of each, ids only."""
    searches: list[dict[str, Any]] = []
    for url in urls:
        searches += [{}, {**canonical_url_body(url), "_source": False}]
    return searches


def media_ids_of_url_searches(urls: Sequence[str], responses: list[dict[str, Any]]) -> dict[str, str]:
    """Each URL's media id from the ``_msearch`` answers to :func:`canonical_url_searches` (in the order asked);
    a URL no record has is left out. One failed search fails them all: a lookup that did not answer must not
    read as "unknown", or the worker would fetch and score the URL again."""
    if len(responses) != len(urls):
        raise SearchIndexError(f"_msearch answered {len(responses)} of {len(urls)} URL lookups")
    found: dict[str, str] = {}
    for url, response in zip(urls, responses, strict=True):
        if "error" in response:
            raise SearchIndexError(f"cannot look up {url!r} by canonical URL: {response['error']}")
        hits = response["hits"]["hits"]
        if hits:
            found[url] = hits[0]["_id"]
    return found


def near_duplicate_query(kind: str, keys: list[int] | None) -> dict[str, Any]:
    """The candidates for a Hamming lookup: records holding one of ``keys`` (at most
    hamming.DEFAULT_MAX_KEYS of them, far below index.max_terms_count), or with ``None`` every
    record that has a hash of this kind (the scan is still exact, only slower)."""
    if keys is None:
        return {"bool": {"filter": [{"exists": {"field": hash_field(kind)}}]}}
    return {"bool": {"filter": [_terms(chunk_field(kind), [str(k) for k in keys])]}}


def scan_body(query: dict[str, Any], sort: list[dict[str, Any]], source: list[str], after: list[Any] | None) -> dict:
    """One page of a walk over every match, by search_after on a unique sort."""
    body: dict[str, Any] = {
        "query": query,
        "sort": sort,
        "size": SCAN_PAGE,
        "_source": source,
        "track_total_hits": False,
    }
    if after is not None:
        body["search_after"] = after
    return body


def review_history_query(media_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Query and sort of one record's audit trail, in commit order."""
    query = {"bool": {"filter": [{"term": {"media_id": media_id}}]}}
    return query, [{"primary_term": "asc"}, {"seq_no": "asc"}]


REVIEW_EVENT_FIELDS = ["media_id", "review", "previous"]


# --- the client -------------------------------------------------------------------------------
def client_from_settings(settings: Settings) -> Elasticsearch:
    """A client for ``settings.es_url`` (several nodes: comma-separated), authenticated by API key,
    or else by user and password; ``es_ca_certs`` for a private CA. Connects lazily."""
    if not settings.es_url:
        raise SearchIndexError("index_backend 'elasticsearch' needs es_url")
    options: dict[str, Any] = {
        "request_timeout": 30,
        "max_retries": 3,
        # Safe for writes: a retried conditional write that already landed is recognised by its
        # write token (see ElasticsearchIndex._read_merge_write), review events have fixed ids.
        "retry_on_timeout": True,
    }
    if settings.es_api_key is not None:
        options["api_key"] = settings.es_api_key.get_secret_value()
    elif settings.es_username:
        password = settings.es_password.get_secret_value() if settings.es_password else ""
        options["basic_auth"] = (settings.es_username, password)
    if settings.es_ca_certs is not None:
        options["ca_certs"] = str(settings.es_ca_certs)
    hosts = [url.strip() for url in settings.es_url.split(",") if url.strip()]
    return Elasticsearch(hosts, **options)


@dataclass(frozen=True)
class _Stored:
    """A record as read, with what a conditional write needs."""

    record: MediaRecord
    seq_no: int
    primary_term: int
    indexed_at: int
    write_token: str


_LOAD_FIELDS = ["doc", "indexed_at", "write_token"]


def _stored_of(hit: Mapping[str, Any]) -> _Stored:
    source = hit["_source"]
    return _Stored(
        record=record_of(source),
        seq_no=hit["_seq_no"],
        primary_term=hit["_primary_term"],
        indexed_at=source["indexed_at"],
        write_token=source.get("write_token", ""),
    )


def _backoff(attempt: int) -> None:
    # Jittered exponential, so writers that just collided do not collide again in lockstep.
    time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))


def _now_ns() -> int:
    return time.time_ns()


class ElasticsearchIndex:
    """:class:`storage.index.SearchIndex` on Elasticsearch 8. Thread-safe (the client is).

    The index owns ``client`` and closes it in :meth:`close`. ``refresh`` is passed on every write:
    ``"wait_for"`` (default: searches see a write once the call returns), ``True`` (tests: refresh
    at once) or ``False`` (throughput; searches see writes within ``index.refresh_interval``).
    """

    def __init__(
        self,
        client: Elasticsearch,
        prefix: str,
        *,
        refresh: bool | str = "wait_for",
        max_keys: int = hamming.DEFAULT_MAX_KEYS,
    ):
        if refresh not in (True, False, "wait_for", "true", "false"):
            raise ValueError(f"refresh must be True, False or 'wait_for', got {refresh!r}")
        self.media = IndexNames(prefix, "media")
        self.reviews = IndexNames(prefix, "reviews")
        self._client = client
        self._refresh = refresh
        self._max_keys = max_keys
        try:
            with self._errors("create the indices"):
                self._ensure(self.media, media_mappings(), media_settings())
                self._ensure(self.reviews, review_mappings(), {})
        except BaseException:
            client.close()  # ours to close from here on, even when opening fails
            raise

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ElasticsearchIndex:
        return cls(client_from_settings(settings), settings.es_index_prefix, **options)

    def __repr__(self) -> str:
        return f"ElasticsearchIndex({self.media.alias!r})"

    # --- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ApiError, TransportError) as exc:
            raise SearchIndexError(f"elasticsearch {self.media.alias}: cannot {what}: {exc}") from exc

    def _ensure(self, names: IndexNames, mappings: dict[str, Any], settings: dict[str, Any]) -> None:
        """Template, then the versioned index behind its alias; safe to race with another process."""
        indices = self._client.indices
        indices.put_index_template(**template_body(names, mappings, settings))
        if indices.exists_alias(name=names.alias):
            # An existing index takes additive mapping changes in place; a conflicting change fails
            # here, loudly: it needs a -v<N+1> index and a reindex.
            indices.put_mapping(index=names.alias, **mappings)
            return
        try:
            indices.create(index=names.index, aliases={names.alias: {"is_write_index": True}})
        except BadRequestError as exc:
            if exc.message != "resource_already_exists_exception":
                raise
        if not indices.exists_alias(name=names.alias):  # the index was there without its alias
            indices.put_alias(index=names.index, name=names.alias, is_write_index=True)

    def _load(self, media_id: str) -> _Stored | None:
        if not MEDIA_ID_PATTERN.match(media_id):
            return None  # no such document can exist; spares a request (and odd ids in a URL)
        try:
            hit = self._client.get(index=self.media.alias, id=media_id, source_includes=_LOAD_FIELDS).body
        except NotFoundError as exc:
            if isinstance(exc.body, dict) and exc.body.get("found") is False:
                return None
            raise  # the index itself is missing: an error, not an unknown record
        return _stored_of(hit)

    def _put(self, record: MediaRecord, stored: _Stored | None, token: str) -> Mapping[str, Any]:
        """Write ``record`` if the document is still the ``stored`` version (absent: if it still
        does not exist); ConflictError otherwise."""
        now = _now_ns()
        indexed_at = stored.indexed_at if stored else now // 1_000
        document = media_document(record, indexed_at=indexed_at, written_at=now, write_token=token)
        if stored is None:
            condition: dict[str, Any] = {"op_type": "create"}
        else:
            condition = {"if_seq_no": stored.seq_no, "if_primary_term": stored.primary_term}
        return self._client.index(
            index=self.media.alias,
            id=record.media_id,
            document=document,
            refresh=self._refresh,
            require_alias=True,
            **condition,
        )

    def _read_merge_write(
        self, media_id: str, change: Callable[[MediaRecord | None], MediaRecord], *, create: bool
    ) -> tuple[MediaRecord | None, MediaRecord, int, int]:
        """Apply ``change`` to the stored record atomically: ``(before, after, primary_term, seq_no)``.

        Raises UnknownMedia when the record is missing and ``create`` is false.
        """
        stored = self._load(media_id)
        for attempt in range(MAX_ATTEMPTS):
            if stored is None and not create:
                raise UnknownMedia(media_id)
            before = None if stored is None else stored.record
            after = change(before)
            token = uuid.uuid4().hex
            try:
                response = self._put(after, stored, token)
                return before, after, response["_primary_term"], response["_seq_no"]
            except ConflictError:
                _backoff(attempt)
                stored = self._load(media_id)
                # The transport retries a request whose answer was lost (timeout, dropped
                # connection); if the first try had landed, the retry conflicts with it. Our token
                # in the stored document says so; without this check add_sighting would count twice.
                if stored is not None and stored.write_token == token:
                    return before, stored.record, stored.primary_term, stored.seq_no
        raise SearchIndexError(f"{media_id}: still conflicting after {MAX_ATTEMPTS} attempts")

    def _scan(self, index: str, query: dict[str, Any], sort: list[dict[str, Any]], source: list[str]) -> Iterator[dict]:
        after: list[Any] | None = None
        while True:
            response = self._client.search(index=index, body=scan_body(query, sort, source, after))
            hits = response.body["hits"]["hits"]
            yield from hits
            if len(hits) < SCAN_PAGE:
                return
            after = hits[-1]["sort"]

    # --- SearchIndex: writes ----------------------------------------------------------------
    def upsert(self, record: MediaRecord) -> MediaRecord:
        def change(old: MediaRecord | None) -> MediaRecord:
            return record if old is None else merge.merge_records(old, record)

        with self._errors(f"upsert {record.media_id}"):
            return self._read_merge_write(record.media_id, change, create=True)[1]

    def upsert_many(self, records: Iterable[MediaRecord]) -> int:
        """One mget and one bulk per batch; records that lost a race are redone one by one.

        Returns the number of records given (each merged into the index).
        """
        given = list(records)
        groups: dict[str, list[MediaRecord]] = {}
        for record in given:
            groups.setdefault(record.media_id, []).append(record)
        ids = list(groups)
        with self._errors("upsert records in bulk"):
            for start in range(0, len(ids), BULK_BATCH):
                batch = {media_id: groups[media_id] for media_id in ids[start : start + BULK_BATCH]}
                for media_id in self._bulk_upsert(batch):
                    for record in batch[media_id]:
                        self.upsert(record)
        return len(given)

    def _bulk_upsert(self, batch: dict[str, list[MediaRecord]]) -> list[str]:
        """Write one batch conditionally; returns the ids that conflicted (to redo one by one)."""
        response = self._client.mget(index=self.media.alias, ids=list(batch), source_includes=_LOAD_FIELDS)
        stored: dict[str, _Stored] = {}
        for hit in response.body["docs"]:
            if "error" in hit:
                raise SearchIndexError(f"cannot read {hit.get('_id')}: {hit['error']}")
            if hit.get("found"):
                stored[hit["_id"]] = _stored_of(hit)
        now = _now_ns()
        operations: list[dict[str, Any]] = []
        for position, (media_id, group) in enumerate(batch.items()):
            old = stored.get(media_id)
            merged = old.record if old else None
            for record in group:  # in order, as that many upserts would
                merged = record if merged is None else merge.merge_records(merged, record)
            assert merged is not None
            indexed_at = old.indexed_at if old else now // 1_000
            # One ns apart, in batch order: the last record of the batch with a URL is the one
            # find_by_canonical_url returns, as after that many upserts.
            written_at = now + position
            action: dict[str, Any] = {"_index": self.media.alias, "_id": media_id}
            if old is None:
                operations.append({"create": action})
            else:
                operations.append({"index": {**action, "if_seq_no": old.seq_no, "if_primary_term": old.primary_term}})
            operations.append(
                media_document(merged, indexed_at=indexed_at, written_at=written_at, write_token=uuid.uuid4().hex)
            )
        result = self._client.bulk(operations=operations, refresh=self._refresh, require_alias=True)
        conflicts: list[str] = []
        failures: list[str] = []
        for item in result.body["items"]:
            outcome = next(iter(item.values()))
            if outcome["status"] == 409:
                conflicts.append(outcome["_id"])
            elif outcome["status"] >= 300:
                failures.append(f"{outcome['_id']}: {outcome.get('error')}")
        if failures:
            raise SearchIndexError(f"{len(failures)} of {len(batch)} records not written, e.g. {failures[0]}")
        return conflicts

    def add_sighting(self, media_id: str, sighting: Sighting) -> MediaRecord:
        def change(old: MediaRecord | None) -> MediaRecord:
            assert old is not None  # create=False: a missing record raised UnknownMedia
            return merge.add_sighting(old, sighting)

        with self._errors(f"add a sighting to {media_id}"):
            return self._read_merge_write(media_id, change, create=False)[1]

    def add_sightings(self, items: Sequence[tuple[str, Sighting]]) -> list[RecordHead | None]:
        # One read-merge-write per record (with its conflict retries), all its sightings at once.
        grouped = merge.by_record(items)
        after: dict[str, RecordHead] = {}
        for media_id, sightings in grouped.items():
            def change(old: MediaRecord | None, sightings: list[Sighting] = sightings) -> MediaRecord:
                assert old is not None  # create=False: a missing record raised UnknownMedia
                return merge.add_sightings(old, sightings)

            try:
                with self._errors(f"add sightings to {media_id}"):
                    after[media_id] = RecordHead.of(self._read_merge_write(media_id, change, create=False)[1])
            except UnknownMedia:
                pass
        return [after.get(media_id) for media_id, _ in items]

    def record_review(self, media_id: str, review: Review) -> MediaRecord:
        """Set the review, then append the audit event.

        Elasticsearch has no transaction over two documents: if the process dies between the two
        writes, the record keeps its review without the event. The event's id is fixed by the
        media write it follows, so writing it again (a transport retry) cannot duplicate it.
        """

        def change(old: MediaRecord | None) -> MediaRecord:
            assert old is not None
            return old.model_copy(update={"review": review})

        with self._errors(f"record a review of {media_id}"):
            before, after, primary_term, seq_no = self._read_merge_write(media_id, change, create=False)
            previous = before.review.label if before is not None and before.review is not None else NO_REVIEW
            event = review_document(
                media_id,
                review,
                previous=previous,
                recorded_at=_now_ns() // 1_000_000,
                primary_term=primary_term,
                seq_no=seq_no,
            )
            self._client.index(
                index=self.reviews.alias,
                id=f"{media_id}-{primary_term}-{seq_no}",
                document=event,
                refresh=self._refresh,
                require_alias=True,
            )
            return after

    def update_many(
        self, media_ids: Sequence[str], change: Callable[[MediaRecord], MediaRecord | None]
    ) -> list[MediaRecord]:
        """One conditional write per record that changes (records that do not are only read)."""

        def keep_or_change(old: MediaRecord | None) -> MediaRecord:
            assert old is not None
            return changed_record(old, change(old)) or old  # unchanged since the first read: a no-op write

        written = []
        for media_id in dict.fromkeys(media_ids):
            with self._errors(f"update {media_id}"):
                stored = self._load(media_id)
                if stored is None or changed_record(stored.record, change(stored.record)) is None:
                    continue
                try:
                    written.append(self._read_merge_write(media_id, keep_or_change, create=False)[1])
                except UnknownMedia:
                    continue  # deleted since it was read
        return written

    # --- SearchIndex: reads -----------------------------------------------------------------
    def get(self, media_id: str) -> MediaRecord | None:
        with self._errors(f"get {media_id}"):
            stored = self._load(media_id)
        return None if stored is None else stored.record

    def find_by_canonical_url(self, url: str) -> MediaRecord | None:
        body = canonical_url_body(url)
        with self._errors("find a record by URL"):
            hits = self._client.search(index=self.media.alias, body=body).body["hits"]["hits"]
        return record_of(hits[0]["_source"]) if hits else None

    def media_ids_by_canonical_url(self, urls: Sequence[str]) -> dict[str, str]:
        # find_by_canonical_url's search for each URL, ids only, many to a request: a fresh worker's handled-URL
        # table knows nothing, and one round trip per URL made a batch of thousands take minutes. (A terms query
        # over the batch would have to pick each URL's last written record out of the hits itself.)
        unique = list(dict.fromkeys(urls))
        found: dict[str, str] = {}
        with self._errors("look records up by URL"):
            for start in range(0, len(unique), URL_SEARCHES_PER_REQUEST):
                chunk = unique[start : start + URL_SEARCHES_PER_REQUEST]
                answer = self._client.msearch(index=self.media.alias, searches=canonical_url_searches(chunk))
                found.update(media_ids_of_url_searches(chunk, answer.body["responses"]))
        return found

    def find_by_sha256(self, sha256: str) -> MediaRecord | None:
        # The media id is the sha256 of the bytes (the contract enforces it), so this is a get.
        return self.get(sha256)

    def near_duplicates(self, hash_hex: str, radius: int, kind: HashKind = "pdq") -> list[tuple[str, int]]:
        spec = HASH_KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown hash kind {kind!r}: one of {', '.join(HASH_KINDS)}")
        query = hamming.parse_hash(hash_hex, spec)
        keys = hamming.query_keys(query, radius, spec, self._max_keys)
        field = hash_field(kind)
        with self._errors("find near duplicates"):
            hits = self._scan(self.media.alias, near_duplicate_query(kind, keys), [{"media_id": "asc"}], [field])
            # A generator: candidates stream through the ranking a page at a time.
            candidates = ((hit["_id"], [int(h, 16) for h in hit["_source"].get(field, [])]) for hit in hits)
            return hamming.rank(query, candidates, radius)

    def search(self, query: SearchQuery) -> SearchPage:
        cursor = cursor_of(query)
        after, snapshot = cursor if cursor is not None else (None, None)
        with self._errors("search"):
            response = self._client.search(index=self.media.alias, body=build_search_body(query, after, snapshot))
        return parse_search(query, response.body, snapshot)

    def aggregate(self, query: SearchQuery | None = None) -> Aggregations:
        with self._errors("aggregate"):
            response = self._client.search(index=self.media.alias, body=build_aggregate_body(query))
        return parse_aggregations(response.body)

    def review_history(self, media_id: str) -> list[ReviewEvent]:
        query, sort = review_history_query(media_id)
        with self._errors(f"read the reviews of {media_id}"):
            hits = self._scan(self.reviews.alias, query, sort, REVIEW_EVENT_FIELDS)
            return [review_event_of(hit["_source"]) for hit in hits]

    # --- lifecycle --------------------------------------------------------------------------
    def drop(self) -> None:
        """Delete both indices and their templates (tests clean up with this; nothing else should)."""
        with self._errors("drop the indices"):
            self._client.indices.delete(index=[self.media.index, self.reviews.index], ignore_unavailable=True)
            for names in (self.media, self.reviews):
                try:
                    self._client.indices.delete_index_template(name=names.template)
                except NotFoundError:
                    pass

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ElasticsearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
