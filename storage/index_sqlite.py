"""The embedded search index: one SQLite file, safe for several processes at once.

Every write is one ``BEGIN IMMEDIATE`` transaction that reads the stored record, merges and
writes it back. IMMEDIATE takes SQLite's write lock before the read, so two processes merging into
the same record run one after the other instead of both reading the old version and one
overwriting the other's sighting. WAL mode lets readers run during a write; ``busy_timeout``
makes a writer wait for the lock instead of failing with ``database is locked``.

The record itself is stored as its JSON, in two parts (``docs.doc`` and ``bulks.bulk``, see
:func:`_split_document`), except what URL hits change: each sighting's count, times and watermarks live in
``sighting_counts`` (one row per record and URL), laid over the JSON on every read, and ``heads`` holds what a
hit's result names of its record. Everything else exists to find records:

- ``media`` columns to filter and sort on, and ``seq``, a number given once per record in write
  order: search cursors remember the highest ``seq`` page one could see, so later arrivals never
  shift a moderator's pages;
- ``timings`` for the dashboard's per-stage percentiles;
- ``media_text``, an FTS5 table over titles, uploaders, post text and URLs, plus filter tags;
- ``urls`` maps canonical URLs to records; ``reviews`` is the audit trail of human reviews;
- ``hashes`` every perceptual hash, one row per record and kind (the raw hash bytes back to back).
  Near-duplicate search runs on an in-memory multi-index (``storage.hamming_memory``) loaded from
  it on first use and caught up before every query from the rows appended since (``hashes.id``
  only grows), then checked against the table.

Search input arrives as a validated :class:`storage.query.SearchQuery`; the SQL below is fixed
text, and every value travels as a parameter (lists as one JSON parameter, read by ``json_each``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pydantic_core
from pydantic import Field

from deepwatch.contracts import (
    DedupClass,
    DetectorScore,
    EventPosition,
    Hints,
    MediaRecord,
    Probability,
    Review,
    Sighting,
    Verdict,
    record_scores_json,
)
from storage import hamming, merge
from storage import search_memory as mirror
from storage.decoded import DecodedRecords
from storage.hamming_memory import DEFAULT_MAX_KEYS, HashMemoryIndex, words_of
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
    Aggregations,
    ReviewEvent,
    SearchPage,
    SearchQuery,
    decode_cursor,
    descending,
    encode_cursor,
    searchable_text,
    sort_value,
    stage_times,
    text_terms,
)

SCHEMA_VERSION = 9  # older files are upgraded in place by _MIGRATIONS (below)
# Stored apart from the rest of a record (the ``bulks`` table): the big fields, which URL hits never change.
BULK_FIELDS = frozenset({"fingerprints", "face_scores"})
# Long enough to ride out a burst of writers; each write holds the lock for milliseconds.
BUSY_TIMEOUT_MS = 60_000

# The live part of each sighting (one row per record and canonical URL): its count, time range, event
# watermarks (JSON) and a key of its hints. A repost of a URL the record has (most events of a busy crawl)
# updates this row and the record's ``media`` row, never its JSON: reading, merging and rewriting the document
# was ~70 us of a distinct repost, and grew with the record's URLs (37 ms a repost at 5,000 URLs). ``docs``
# keeps the sightings as the record was last written whole; every read lays these rows over them (_live).
# Rows are not written with a new record (paying for them in every bulk write cost a sixth of the bulk upsert
# rate) but by the first repost of one of its URLs (_seed_rows), from the JSON's sightings, or by its first
# rewrite. A sighting without a row is as its JSON says.
# Times are POSIX seconds (exact to the microsecond for centuries either side of now), read back in UTC.
_SIGHTING_COUNTS = """CREATE TABLE IF NOT EXISTS sighting_counts (
        seq INTEGER NOT NULL, canonical_url TEXT NOT NULL, count INTEGER NOT NULL,
        first_seen REAL NOT NULL, last_seen REAL NOT NULL, applied TEXT NOT NULL, hints_key INTEGER,
        PRIMARY KEY (seq, canonical_url)
    ) WITHOUT ROWID"""
# What a URL hit's result names of its record (storage.index.RecordHead): its dedup class, and its verdict, score
# and detector scores as the result's JSON writes them, handed on undecoded. A few hundred bytes where ``docs``
# holds a kilobyte or more: reading the documents of a batch of distinct records was a third of the hit path's index
# time in a worker just started (their pages not yet in SQLite's cache). Written, as the rows above, by a record's
# first repost or rewrite.
_HEADS = "CREATE TABLE IF NOT EXISTS heads (seq INTEGER PRIMARY KEY, dedup TEXT NOT NULL, scores TEXT NOT NULL)"

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Narrow rows (no document) so that filtering and sorting touch few pages; the document is in
    # ``docs``, read only for the records a page returns. ``platforms`` (a JSON list) feeds the
    # dashboard's counts by platform, ``sources`` the in-memory mirror (storage.search_memory);
    # ``detectors`` (a JSON object, name: P(fake)) is the exact check behind the score-bucket tags
    # (see _detector_tag). Filtering by any of them goes through FTS.
    #
    # Records arrive in random media_id (sha256) and score order, so an index on either gets its
    # inserts spread over the whole B-tree: at a million records nearly every insert dirties a page
    # of its own, which the WAL then writes whole (4 KB for an entry of a few bytes). Those two
    # indexes were 70 % of the bytes a bulk write wrote. Both are therefore kept narrow: ``mkey``
    # (the media_id's first 64 bits) instead of the 64-character id, in the lookup index and in the
    # score index; mkeys sort as their ids do, and the rare tie (a shared mkey) is told apart by
    # reading the row. Records arrive roughly in first_seen order, so the time index keeps the id
    # (its inserts are appends).
    """CREATE TABLE IF NOT EXISTS media (
        seq INTEGER PRIMARY KEY,
        mkey INTEGER NOT NULL,
        media_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        verdict TEXT NOT NULL,
        score REAL,
        score_sort REAL NOT NULL,
        dedup TEXT NOT NULL,
        review TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        platforms TEXT NOT NULL,
        sources TEXT NOT NULL,
        detectors TEXT NOT NULL,
        sightings INTEGER NOT NULL DEFAULT 0,
        urls INTEGER NOT NULL DEFAULT 0
    )""",
    # A record's JSON in two parts with no field in common (_split_document): ``bulks``, its fingerprints and
    # face scores (tens of KB for a video, written when it is scored), and ``docs``, the rest, which every URL
    # hit rewrites. Two tables, not two columns: SQLite rewrites a whole row to change one column of it.
    "CREATE TABLE IF NOT EXISTS docs (seq INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bulks (seq INTEGER PRIMARY KEY, bulk TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS media_by_key ON media (mkey)",
    "CREATE INDEX IF NOT EXISTS media_by_score ON media (score_sort, mkey)",
    "CREATE INDEX IF NOT EXISTS media_by_time ON media (first_seen, media_id)",
    "CREATE INDEX IF NOT EXISTS media_last_seen ON media (last_seen)",
    # No index on verdict, kind, dedup or review: a handful of values each, so an index would not
    # narrow a search much, and every write would pay for it: at a million records every insert
    # into a B-tree ordered by something other than time dirties a page of its own. ``timings`` has
    # no index on ``seq`` for the same reason: a rewrite deletes the old rows by their full keys.
    """CREATE TABLE IF NOT EXISTS timings (
        stage TEXT NOT NULL, seconds REAL NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (stage, seq)
    ) WITHOUT ROWID""",
    # rowid = media.seq. ``body``: the free text; unicode61 folds case and splits on punctuation like
    # query.text_terms. ``tags``: one token per list-filter value (see _tag), so that a text search
    # with filters is one FTS5 query whose posting lists intersect inside SQLite's C code. Every
    # query term is one token, so positions are never needed (detail=column), nor the per-row token
    # counts that only bm25 ranking reads (columnsize=0): both make every write and match cheaper.
    # FTS5 writes new segments and merges them later, so tags cost no random B-tree inserts.
    """CREATE VIRTUAL TABLE IF NOT EXISTS media_text
       USING fts5(body, tags, tokenize = 'unicode61', detail = column, columnsize = 0)""",
    _SIGHTING_COUNTS,
    _HEADS,
    # Canonical URLs are as random as media ids, so the lookup index holds a 64-bit hash of each
    # (``ukey``, see _ukey) rather than the URL; the row has the URL to check.
    "CREATE TABLE IF NOT EXISTS urls (ukey INTEGER NOT NULL, canonical_url TEXT NOT NULL, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS urls_by_key ON urls (ukey)",
    # AUTOINCREMENT: ids are never reused, so "rows after id N" is exactly what is new. ``packed``
    # holds a record's hashes of one kind as raw bytes back to back: one row instead of one per
    # hash, and half the bytes of hex, was a fifth of the cost of a bulk write.
    """CREATE TABLE IF NOT EXISTS hashes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL, kind TEXT NOT NULL, packed BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS hashes_seq ON hashes (seq, kind)",
    """CREATE TABLE IF NOT EXISTS reviews (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        media_id TEXT NOT NULL, review TEXT NOT NULL, previous TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS reviews_media ON reviews (media_id, id)",
    # Every rewrite of a stored record, in order: how in-memory mirrors (storage.search_memory) learn
    # which of the records they hold changed. New records need no entry: their seq is beyond the mirror's.
    "CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL)",
]

# Each list filter of a query is a tag column in the FTS table: a one-letter field prefix and the
# value in hex (one alphanumeric token, whatever punctuation the value holds).
_TAG_PREFIX = {"verdict": "v", "platform": "p", "source": "s", "kind": "k", "dedup": "d", "review": "r"}
# Detector scores are tagged by bucket ("x", the detector name in hex, "b", the bucket): a score range
# becomes the OR of the buckets it overlaps, and media.detectors holds the exact scores to check.
DETECTOR_BUCKETS = 20
SIGHTING_COUNT_DEFAULT = int(Sighting.model_fields["count"].default)
# Each older schema this code upgrades in place: the statements that turn it into the next one.
_MIGRATIONS = {
    # 5 -> 6: sighting and URL counts as columns, so that dashboards sum them instead of reading
    # every stored document (9 s at a million records, 4 of them in json_each over ``docs``).
    5: [
        "ALTER TABLE media ADD COLUMN sightings INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE media ADD COLUMN urls INTEGER NOT NULL DEFAULT 0",
        f"""UPDATE media SET (sightings, urls) = (
               SELECT coalesce(sum(coalesce(json_extract(s.value, '$.count'), {SIGHTING_COUNT_DEFAULT})), 0),
                      count(s.value)
               FROM docs d, json_each(d.doc, '$.sightings') s WHERE d.seq = media.seq)""",
    ],
    # 6 -> 7: fingerprints and face scores apart from the rest of the document (``bulks``), so that a URL
    # hit reads and rewrites a few hundred bytes instead of tens of kilobytes.
    6: [
        "CREATE TABLE bulks (seq INTEGER PRIMARY KEY, bulk TEXT NOT NULL)",
        "INSERT INTO bulks (seq, bulk) SELECT seq, json_remove(doc, {}) FROM docs".format(
            ", ".join(f"'$.{name}'" for name in MediaRecord.model_fields if name not in BULK_FIELDS)
        ),
        "UPDATE docs SET doc = json_remove(doc, {})".format(", ".join(f"'$.{name}'" for name in BULK_FIELDS)),
    ],
    # 7 -> 8: each sighting's count, times and watermarks in a row of its own, which URL hits update, and each
    # record's head; both filled as records are next rewritten.
    7: [_SIGHTING_COUNTS, _HEADS],
    # 8 -> 9: heads hold a result's JSON of the record's scores, not the record's: the old ones go, and each
    # record's next repost makes its head again.
    8: ["DROP TABLE heads", _HEADS],
}
# A text search matching more records than this is paged along the sort index instead of sorting
# every match (see SqliteIndex.search).
SORT_MATCHES_LIMIT = 20_000
# Rows loaded into the in-memory mirror per SELECT (bounds the Python objects alive at once).
MIRROR_CHUNK = 50_000


def _split_document(record: MediaRecord) -> tuple[str, str]:
    """The record's JSON as ``(doc, bulk)``: all but its bulky fields, and those (BULK_FIELDS), two JSON objects
    that :func:`_joined_document` puts back together. Fields never set are left out (a third of the bytes); reading
    fills their defaults back in. (exclude_defaults would also drop fields set to their default, for 30 %
    more time.)"""
    return (
        record.model_dump_json(exclude=BULK_FIELDS, exclude_unset=True),
        record.model_dump_json(include=BULK_FIELDS, exclude_unset=True),
    )


def _joined_document(doc: str, bulk: str | None) -> str:
    """The one JSON object of the two parts of :func:`_split_document` (their fields are disjoint)."""
    if bulk is None or bulk == "{}":
        return doc
    if doc == "{}":
        return bulk
    return f"{doc[:-1]},{bulk[1:]}"


@functools.lru_cache(maxsize=65_536)
def _json_list(text: str) -> tuple[str, ...]:
    # Few distinct lists (platform and source combinations) recur across millions of rows.
    return tuple(json.loads(text))


def _mkey(media_id: str) -> int | None:
    """The media_id's first 64 bits as a signed int64 (SQLite's integer); None for a string that
    cannot be a media id (lookups take ids from users), which then simply matches nothing."""
    try:
        return int(media_id[:16], 16) - (1 << 63) if len(media_id) == 64 else None
    except ValueError:
        return None


def _ukey(url: str) -> int:
    """64 bits of a text's BLAKE2b, as a signed int64: for a URL, the key of the ``urls`` lookup index (also the
    key of a sighting's hints, _hints_key)."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big", signed=True)


def _verdict(record: MediaRecord) -> str:
    return record.verdict or "unscored"


def _review(record: MediaRecord) -> str:
    return record.review.label if record.review else "none"


@functools.lru_cache(maxsize=4096)
def _tag(field: str, value: str) -> str:
    return _TAG_PREFIX[field] + value.encode().hex()


def _detector_tag(name: str, bucket: int) -> str:
    return f"x{name.encode().hex()}b{bucket}"


def _bucket(p_fake: float) -> int:
    return min(int(p_fake * DETECTOR_BUCKETS), DETECTOR_BUCKETS - 1)


def _tags(record: MediaRecord, platforms: tuple[str, ...], sources: tuple[str, ...]) -> str:
    """The record's filter tags; ``platforms`` and ``sources`` are its :func:`_platforms_sources`."""
    tags = _facet_tags(_verdict(record), platforms, sources, record.kind, record.dedup, _review(record))
    if record.detectors:
        tags += _detector_tags(tuple(sorted((name, _bucket(d.p_fake)) for name, d in record.detectors.items())))
    return tags


@functools.lru_cache(maxsize=65_536)
def _detector_tags(buckets: tuple[tuple[str, int], ...]) -> str:
    return "".join(" " + _detector_tag(name, bucket) for name, bucket in buckets)


def _platforms_sources(record: MediaRecord) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(sorted({s.platform for s in record.sightings})),
        tuple(sorted({s.source for s in record.sightings})),
    )


@functools.lru_cache(maxsize=65_536)
def _facet_tags(
    verdict: str, platforms: tuple[str, ...], sources: tuple[str, ...], kind: str, dedup: str, review: str
) -> str:
    # Cached: a handful of combinations recur across every write of a bulk load.
    values = {
        "verdict": (verdict,),
        "platform": platforms,
        "source": sources,
        "kind": (kind,),
        "dedup": (dedup,),
        "review": (review,),
    }
    return " ".join(_tag(field, v) for field, vs in values.items() for v in vs)


@functools.lru_cache(maxsize=65_536)
def _json_of_list(values: tuple[str, ...]) -> str:
    return _json(values)


def _json(value: Any) -> str:
    # pydantic-core's encoder: several times faster than the json module on the write path.
    return pydantic_core.to_json(value).decode()


def _hash_rows(record: MediaRecord, seq: int) -> list[tuple[int, str, bytes]]:
    """``(seq, kind, packed)`` for each kind the record has hashes of (hex validated by the contract)."""
    return [
        (seq, kind, bytes.fromhex("".join(hexes)))
        for kind in HASH_KINDS
        if (hexes := record_hashes(record, kind))
    ]


def _sighting_count(sightings: list[Sighting]) -> int:
    """Every report of a record's URLs (the ``sightings`` column)."""
    return sum(s.count for s in sightings)


def _timing_rows(record: MediaRecord, seq: int) -> set[tuple[str, float, int]]:
    return {(stage, seconds, seq) for stage, seconds in record.timings.items()}


class _SeedView(pydantic.BaseModel):
    """What a record's first repost reads of its JSON to make its head and rows (_seed_rows): the head's fields and
    the sightings, from ``docs.doc`` alone; other fields are skipped unvalidated. Decoding a scored clip's whole
    record (~30 KB) took 220-380 us, and most of a first repost's time."""

    model_config = pydantic.ConfigDict(extra="ignore")

    media_id: str
    dedup: DedupClass = "none"
    verdict: Verdict | None = None
    score: Probability | None = None
    detectors: dict[str, DetectorScore] = Field(default_factory=dict)
    sightings: list[Sighting] = Field(default_factory=list)

    def head(self) -> RecordHead:
        return RecordHead(self.media_id, self.dedup, record_scores_json(self.verdict, self.score, self.detectors))


# Stored watermarks were validated on their way in (Sighting.applied): read back, only their shape is checked.
_MARKS_JSON = pydantic.TypeAdapter(dict[str, EventPosition])


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _hints_key(hints: Hints | None) -> int | None:
    """64 bits standing for a sighting's hints (None for none): a repost whose hints differ from the stored ones
    changes what is searched, and takes the whole read-merge-write. Made of the fields, not of a JSON dump of
    them (a fifth of the cost); a unit separator keeps two fields from reading as one."""
    if hints is None:
        return None
    posted = None if hints.posted_at is None else hints.posted_at.timestamp()
    return _ukey(f"{hints.title!r}\x1f{hints.uploader!r}\x1f{posted!r}\x1f{hints.text!r}")


def _marks_text(marks: dict[str, EventPosition]) -> str:
    return _MARKS_JSON.dump_json(marks).decode() if marks else "{}"


def _count_row(seq: int, sighting: Sighting) -> tuple[Any, ...]:
    """``sighting``'s row of sighting_counts."""
    return (seq, sighting.canonical_url, sighting.count, sighting.first_seen.timestamp(),
            sighting.last_seen.timestamp(), _marks_text(sighting.applied), _hints_key(sighting.hints))


def _same(before: Sighting | None, after: Sighting) -> bool:
    # a merge keeps the sightings it did not change as they were: most are the same object
    return before is after or before == after


class _Counting:
    """One sighting's row of sighting_counts while a batch of URL hits counts it up (SqliteIndex.add_sightings).

    Its watermarks stay as their stored JSON reads (``{partition: {"offset": …, "timestamp_ms": …}}``): decoding them
    into EventPosition parts and dumping them again was a tenth of a distinct repost's index time (bench stream)."""

    __slots__ = ("added", "canonical_url", "count", "earlier", "first", "hints_key", "last", "marks")

    def __init__(self, canonical_url: str, count: int, first: float, last: float,
                 marks: dict[str, dict[str, int]], hints_key: int | None) -> None:
        self.canonical_url = canonical_url
        self.count = count
        self.first, self.last = first, last  # POSIX seconds
        self.marks = marks
        self.hints_key = hints_key
        self.added = 0  # reports counted by this batch
        self.earlier = False  # whether one of them moved first_seen back

    @classmethod
    def of_row(cls, canonical_url: str, count: int, first: float, last: float, applied: str,
               hints_key: int | None) -> _Counting:
        return cls(canonical_url, count, first, last, json.loads(applied), hints_key)

    @classmethod
    def of_sighting(cls, sighting: Sighting) -> _Counting:
        return cls(sighting.canonical_url, sighting.count, sighting.first_seen.timestamp(),
                   sighting.last_seen.timestamp(), _marks_of(sighting.applied), _hints_key(sighting.hints))

    def counts(self, sighting: Sighting) -> bool:
        """Whether ``sighting`` (a new event at this URL) only counts the row up: its hints are none or the same."""
        return sighting.hints is None or _hints_key(sighting.hints) == self.hints_key

    def add(self, sighting: Sighting) -> None:
        """What storage.merge.count_sightings does to the sighting, on the row (a redelivered event changes nothing:
        merge.already_applied and merge.merge_applied, on the stored JSON)."""
        marks, applied = self.marks, sighting.applied
        later = {partition: position for partition, position in applied.items()
                 if not _mark_covers(marks.get(partition), position)}
        if applied and not later:
            return
        self.count += sighting.count
        self.added += sighting.count
        first, last = sighting.first_seen.timestamp(), sighting.last_seen.timestamp()
        if first < self.first:
            self.first, self.earlier = first, True
        self.last = max(self.last, last)
        marks.update(_marks_of(later))

    def marks_text(self) -> str:
        # written out: partition names are Kafka's ("topic:n"), nothing to escape, and json's encoder took three times
        # as long for these few bytes
        return "{" + ",".join(f'"{partition}":{{"offset":{mark["offset"]},"timestamp_ms":{mark["timestamp_ms"]}}}'
                              for partition, mark in self.marks.items()) + "}"


def _marks_of(applied: dict[str, EventPosition]) -> dict[str, dict[str, int]]:
    return {partition: {"offset": p.offset, "timestamp_ms": p.timestamp_ms} for partition, p in applied.items()}


def _mark_covers(mark: dict[str, int] | None, position: EventPosition) -> bool:
    """EventPosition.covers, of a stored mark (None: the partition has none)."""
    return mark is not None and position.offset <= mark["offset"] and position.timestamp_ms <= mark["timestamp_ms"]


@dataclass
class _Write:
    """One record to store: its ``seq`` (None when new), the version stored now, the version to store."""

    seq: int | None
    old: MediaRecord | None
    record: MediaRecord


def _fts_expression(query: SearchQuery) -> str | None:
    """The FTS5 query for the text and every list filter, or None when the query has neither.

    Every user word is quoted (FTS5 operators in user text, such as NEAR, OR, *, ^ or :, are only
    words here), and tags are hex, so nothing the user typed is read as syntax."""
    parts = []
    if query.text:
        parts.append("body : (" + " AND ".join('"' + t.replace('"', '""') + '"' for t in text_terms(query.text)) + ")")
    for field in _TAG_PREFIX:
        values = getattr(query, field)
        if values:
            parts.append("tags : (" + " OR ".join(f'"{_tag(field, v)}"' for v in values) + ")")
    for name, bounds in sorted(query.detectors.items()):
        buckets = range(_bucket(bounds.min), _bucket(bounds.max) + 1)
        parts.append("tags : (" + " OR ".join(f'"{_detector_tag(name, b)}"' for b in buckets) + ")")
    return " AND ".join(parts) or None


def _ranges(query: SearchQuery) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``media m`` for the filters that are ranges, and their parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.score is not None:
        clauses.append("m.score BETWEEN ? AND ?")
        params += [query.score.min, query.score.max]
    for name, bounds in sorted(query.detectors.items()):
        # The bucket tags found the candidates; this is the exact check at the range's edges.
        clauses.append("(SELECT value FROM json_each(m.detectors) WHERE key = ?) BETWEEN ? AND ?")
        params += [name, bounds.min, bounds.max]
    if query.seen_since is not None:
        clauses.append("m.last_seen >= ?")
        params.append(query.seen_since.timestamp())
    if query.seen_until is not None:
        clauses.append("m.first_seen <= ?")
        params.append(query.seen_until.timestamp())
    return clauses, params


def _selection(
    query: SearchQuery, snapshot: int | None, *, by_sort_index: str | None = None
) -> tuple[str, list[Any]]:
    """``FROM … WHERE …`` selecting the records of ``query`` (written up to ``snapshot``).

    With an FTS expression the match drives the join (CROSS JOIN fixes that order), unless
    ``by_sort_index`` names an index: then ``media`` is walked along it and the matches are a set it
    probes. (Named, because SQLite's planner, seeing the ``seq`` range, would rather scan by rowid and
    sort everything when the index covers the ORDER BY only up to its last column.)"""
    fts = _fts_expression(query)
    clauses, params = _ranges(query)
    if snapshot is not None:
        clauses.insert(0, "m.seq <= ?")
        params.insert(0, snapshot)
    if fts is not None and not by_sort_index:
        where = " AND ".join(["media_text MATCH ?", *clauses])
        return f"FROM media_text t CROSS JOIN media m ON m.seq = t.rowid WHERE {where}", [fts, *params]
    if fts is not None:
        clauses.append("m.seq IN (SELECT rowid FROM media_text WHERE media_text MATCH ?)")
        params.append(fts)
    indexed = f" INDEXED BY {by_sort_index}" if by_sort_index else ""
    return f"FROM media m{indexed} WHERE {' AND '.join(clauses) or '1'}", params


class SqliteIndex:
    """:class:`storage.index.SearchIndex` on SQLite. Thread-safe: one connection behind a lock."""

    def __init__(self, path: Path | str, *, max_keys: int = DEFAULT_MAX_KEYS, search_memory: bool = False):
        """``search_memory``: answer searches from an in-memory mirror (storage.search_memory). It
        costs a load of every record on the first search (seconds at a million) and memory (about
        100 bytes a record), and then makes searches several times faster: for long-lived processes."""
        self.path = str(path)
        self._columns = mirror.SearchColumns() if search_memory else None
        self._words = mirror.TermCache()
        self._change_upto = 0
        self._lock = threading.Lock()
        self._memory: dict[str, HashMemoryIndex] = {}
        self._decoded = DecodedRecords()  # under self._lock, as every read and write
        self._memory_upto: dict[str, int] = {}
        self._max_keys = max_keys
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # timeout= sets SQLite's busy_timeout. isolation_level=None: the module must not open
            # transactions behind our back; every write below says BEGIN IMMEDIATE itself.
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Bulk writes touch many index pages; a bigger cache keeps them from spilling mid-batch.
            self._conn.execute("PRAGMA cache_size = -65536")
            # Checkpoints (copying the WAL into the file, with an fsync each side) are the costliest
            # part of a write burst; a larger WAL between them copies a page rewritten by several
            # batches once. The limit trims the WAL file back after a checkpoint.
            self._conn.execute("PRAGMA wal_autocheckpoint = 65536")
            self._conn.execute("PRAGMA journal_size_limit = 67108864")
        except sqlite3.Error as exc:
            raise SearchIndexError(f"cannot open index {self.path}: {exc}") from exc
        with self._write() as conn:
            row = None
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = None if row is None else int(row[0])
            while version in _MIGRATIONS:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
            if version is not None and version != SCHEMA_VERSION:
                raise SearchIndexError(
                    f"index {self.path} has schema {row[0]}, this code reads {SCHEMA_VERSION}; "
                    "move the file aside and let deepwatch create a new one"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # --- transactions -----------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise SearchIndexError(f"index {self.path}: cannot start a write: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise SearchIndexError(f"index {self.path}: write failed: {exc}") from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise SearchIndexError(f"index {self.path}: commit failed: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction: several SELECTs see one snapshot (WAL), and writers go on.
        with self._lock:
            try:
                self._conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise SearchIndexError(f"index {self.path}: cannot read: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise SearchIndexError(f"index {self.path}: read failed: {exc}") from exc
            finally:
                self._conn.execute("COMMIT")

    # --- rows -------------------------------------------------------------------------------
    def _load_many(self, conn: sqlite3.Connection, media_ids: Iterable[str]) -> dict[str, tuple[int, MediaRecord]]:
        wanted = set(media_ids)
        rows = conn.execute(
            """SELECT m.media_id, m.seq, d.doc, b.bulk FROM media m JOIN docs d ON d.seq = m.seq
                   LEFT JOIN bulks b ON b.seq = m.seq
               WHERE m.mkey IN (SELECT value FROM json_each(?))""",
            (json.dumps([key for mid in wanted if (key := _mkey(mid)) is not None]),),
        ).fetchall()
        decode = self._decoded.decode
        stored = {seq: decode(mid, _joined_document(doc, bulk)) for mid, seq, doc, bulk in rows if mid in wanted}
        return {record.media_id: (seq, record) for seq, record in self._live(conn, stored).items()}

    @staticmethod
    def _live(conn: sqlite3.Connection, stored: dict[int, MediaRecord]) -> dict[int, MediaRecord]:
        """The records of ``stored`` (by seq, as their JSON holds them) with the counts, times and watermarks their
        URLs' rows of sighting_counts have now (URL hits update those alone)."""
        if not stored:
            return stored
        rows: dict[int, dict[str, tuple[int, float, float, str]]] = {}
        for seq, url, *live in conn.execute(
            """SELECT seq, canonical_url, count, first_seen, last_seen, applied FROM sighting_counts
               WHERE seq IN (SELECT value FROM json_each(?))""",
            (json.dumps(list(stored)),),
        ):
            rows.setdefault(seq, {})[url] = live  # type: ignore[assignment]
        out = {}
        for seq, record in stored.items():
            known = rows.get(seq, {})
            sightings = []
            for sighting in record.sightings:
                row = known.get(sighting.canonical_url)
                # a hit always adds to the count: the same count is the same row as the JSON's
                if row is not None and row[0] != sighting.count:
                    count, first, last, applied = row
                    sighting = sighting.copied_with(
                        count=count, first_seen=_utc(first), last_seen=_utc(last),
                        applied=_MARKS_JSON.validate_json(applied))
                sightings.append(sighting)
            if any(new is not old for new, old in zip(sightings, record.sightings, strict=True)):
                record = record.copied_with(
                    sightings=sightings,
                    first_seen=min(record.first_seen, *(s.first_seen for s in sightings)),
                    last_seen=max(record.last_seen, *(s.last_seen for s in sightings)),
                )
            out[seq] = record
        return out

    def _load(self, conn: sqlite3.Connection, media_id: str) -> tuple[int, MediaRecord] | None:
        return self._load_many(conn, [media_id]).get(media_id)

    def _document(self, record: MediaRecord) -> tuple[str, str]:
        """The two parts of the JSON stored for ``record`` (_split_document), which the decoded-record cache
        then holds beside it."""
        doc, bulk = _split_document(record)
        self._decoded.remember(record.media_id, _joined_document(doc, bulk), record)
        return doc, bulk

    def _store_many(self, conn: sqlite3.Connection, writes: list[_Write]) -> None:
        """Write each record and its side rows, one statement per table for the whole batch.

        A rewritten record changes only the side rows that differ from its stored version: those
        are deleted by their full keys (no index on ``seq`` is needed) and the new ones inserted."""
        next_seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM media").fetchone()[0]
        rows: list[tuple[Any, ...]] = []
        docs: list[tuple[int, str]] = []
        bulks: list[tuple[int, str]] = []
        texts: list[tuple[int, str, str]] = []
        retexted: list[int] = []
        rehashed: list[int] = []
        gone_timings: list[tuple[str, float, int]] = []
        new: dict[str, list[tuple[Any, ...]]] = {"timings": [], "hashes": []}
        urls: dict[str, int] = {}  # canonical URL -> the seq it points at after this batch
        counts: list[tuple[Any, ...]] = []
        gone_counts: list[tuple[int, str]] = []
        heads: list[tuple[int, str, str]] = []
        for write in writes:
            record, old, seq = write.record, write.old, write.seq
            if seq is None:
                seq, next_seq = next_seq, next_seq + 1
            doc, bulk = self._document(record)
            docs.append((seq, doc))
            if old is None or old.fingerprints != record.fingerprints or old.face_scores != record.face_scores:
                bulks.append((seq, bulk))
            platforms, sources = _platforms_sources(record)
            rows.append(
                (
                    seq,
                    _mkey(record.media_id),
                    record.media_id,
                    record.kind,
                    _verdict(record),
                    record.score,
                    sort_value(record, "score_desc"),
                    record.dedup,
                    _review(record),
                    record.first_seen.timestamp(),
                    record.last_seen.timestamp(),
                    _json_of_list(platforms),
                    _json_of_list(sources),
                    _json({name: d.p_fake for name, d in record.detectors.items()}),
                    _sighting_count(record.sightings),
                    len(record.sightings),
                )
            )
            timings = _timing_rows(record, seq)
            before = set() if old is None else _timing_rows(old, seq)
            gone_timings += before - timings
            new["timings"] += timings - before
            text = (seq, searchable_text(record), _tags(record, platforms, sources))
            if old is None or text != (seq, searchable_text(old), _tags(old, *_platforms_sources(old))):
                if old is not None:
                    retexted.append(seq)
                texts.append(text)
            # A URL serving new bytes (an edited post) points at the record that gained it last.
            known = set() if old is None else {s.canonical_url for s in old.sightings}
            urls.update((s.canonical_url, seq) for s in record.sightings if s.canonical_url not in known)
            if old is not None:  # a new record gets no rows nor head (see _SIGHTING_COUNTS)
                before = {s.canonical_url: s for s in old.sightings}
                counts += [_count_row(seq, s) for s in record.sightings if not _same(before.get(s.canonical_url), s)]
                gone_counts += [(seq, url) for url in before.keys() - {s.canonical_url for s in record.sightings}]
                head = RecordHead.of(record)
                heads.append((seq, head.dedup, head.scores))
            if old is None or old.fingerprints != record.fingerprints:
                if old is not None:
                    rehashed.append(seq)
                new["hashes"] += _hash_rows(record, seq)
        conn.executemany("DELETE FROM timings WHERE stage = ? AND seconds = ? AND seq = ?", gone_timings)
        conn.executemany("INSERT INTO changes (seq) VALUES (?)", [(w.seq,) for w in writes if w.old is not None])
        if retexted:
            conn.execute(
                "DELETE FROM media_text WHERE rowid IN (SELECT value FROM json_each(?))", [json.dumps(retexted)]
            )
        if rehashed:
            conn.execute("DELETE FROM hashes WHERE seq IN (SELECT value FROM json_each(?))", (json.dumps(rehashed),))
        conn.executemany(
            """INSERT INTO media (seq, mkey, media_id, kind, verdict, score, score_sort, dedup, review,
                                  first_seen, last_seen, platforms, sources, detectors, sightings, urls)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (seq) DO UPDATE SET
                 kind = excluded.kind, verdict = excluded.verdict,
                 score = excluded.score, score_sort = excluded.score_sort, dedup = excluded.dedup,
                 review = excluded.review, first_seen = excluded.first_seen, last_seen = excluded.last_seen,
                 platforms = excluded.platforms, sources = excluded.sources, detectors = excluded.detectors,
                 sightings = excluded.sightings, urls = excluded.urls""",
            rows,
        )
        conn.executemany("INSERT INTO timings (stage, seconds, seq) VALUES (?, ?, ?)", new["timings"])
        conn.executemany("INSERT OR REPLACE INTO docs (seq, doc) VALUES (?, ?)", docs)
        conn.executemany("INSERT OR REPLACE INTO bulks (seq, bulk) VALUES (?, ?)", bulks)
        conn.executemany("INSERT INTO media_text (rowid, body, tags) VALUES (?, ?, ?)", texts)
        url_rows = [(_ukey(url), url, seq) for url, seq in urls.items()]
        conn.executemany("DELETE FROM urls WHERE ukey = ? AND canonical_url = ?", [row[:2] for row in url_rows])
        conn.executemany("INSERT INTO urls (ukey, canonical_url, seq) VALUES (?, ?, ?)", url_rows)
        conn.executemany("INSERT INTO hashes (seq, kind, packed) VALUES (?, ?, ?)", new["hashes"])
        conn.executemany("DELETE FROM sighting_counts WHERE seq = ? AND canonical_url = ?", gone_counts)
        conn.executemany("INSERT OR REPLACE INTO sighting_counts VALUES (?, ?, ?, ?, ?, ?, ?)", counts)
        conn.executemany("INSERT OR REPLACE INTO heads (seq, dedup, scores) VALUES (?, ?, ?)", heads)

    # --- SearchIndex: writes ----------------------------------------------------------------
    def upsert(self, record: MediaRecord) -> MediaRecord:
        with self._write() as conn:
            return self._upsert_batch(conn, [record])[-1]

    def upsert_many(self, records: Iterable[MediaRecord]) -> int:
        batch = list(records)
        if batch:
            with self._write() as conn:
                self._upsert_batch(conn, batch)
        return len(batch)

    def _upsert_batch(self, conn: sqlite3.Connection, records: list[MediaRecord]) -> list[MediaRecord]:
        stored = self._load_many(conn, {r.media_id for r in records})
        # Records sharing an id merge in order into one write.
        pending: dict[str, _Write] = {
            media_id: _Write(seq, old, old) for media_id, (seq, old) in stored.items()
        }
        out: list[MediaRecord] = []
        for record in records:
            write = pending.get(record.media_id)
            if write is None:
                write = pending[record.media_id] = _Write(None, None, record)
            else:
                write.record = merge.merge_records(write.record, record)
            out.append(write.record)
        self._store_many(conn, list(pending.values()))
        return out

    def update_many(
        self, media_ids: Sequence[str], change: Callable[[MediaRecord], MediaRecord | None]
    ) -> list[MediaRecord]:
        wanted = list(dict.fromkeys(media_ids))
        writes: list[_Write] = []
        if not wanted:
            return []
        with self._write() as conn:
            stored = self._load_many(conn, wanted)
            for media_id in wanted:
                if media_id not in stored:
                    continue
                seq, old = stored[media_id]
                new = changed_record(old, change(old))
                if new is not None:
                    writes.append(_Write(seq, old, new))
            if writes:
                self._store_many(conn, writes)
        return [write.record for write in writes]

    def add_sighting(self, media_id: str, sighting: Sighting) -> MediaRecord:
        with self._write() as conn:
            loaded = self._load(conn, media_id)
            if loaded is None:
                raise UnknownMedia(media_id)
            seq, old = loaded
            merged = merge.add_sighting(old, sighting)
            if merged is not old:  # a redelivered event (merge.add_sighting) writes nothing
                self._store_many(conn, [_Write(seq, old, merged)])
            return merged

    def add_sightings(self, items: Sequence[tuple[str, Sighting]]) -> list[RecordHead | None]:
        """Most calls only count URLs the records already have up (reposts): those update each URL's row of
        ``sighting_counts`` and the record's ``media`` row, reading only the record's head (the ``heads`` table)
        and never decoding, merging or rewriting its JSON. A record's first repost makes its head and rows from
        the head and sightings of its JSON first (:meth:`_seed_rows`). A record that gains a URL or new hints
        changes what is searched, and takes the whole read-merge-write."""
        if not items:
            return []
        grouped = merge.by_record(items)
        with self._write() as conn:
            rows = conn.execute(
                """SELECT m.seq, m.media_id, h.dedup, h.scores FROM media m LEFT JOIN heads h ON h.seq = m.seq
                   WHERE m.mkey IN (SELECT value FROM json_each(?))""",
                (json.dumps([key for mid in grouped if (key := _mkey(mid)) is not None]),),
            ).fetchall()
            heads: dict[str, RecordHead] = {}
            seqs: dict[str, int] = {}
            for seq, media_id, dedup, scores in rows:
                if media_id not in grouped:  # another id under the same mkey
                    continue
                seqs[media_id] = seq
                if scores is not None:
                    heads[media_id] = RecordHead(media_id, dedup, scores)
            wanted = list({(seqs[mid], s.canonical_url): None for mid, group in grouped.items() if mid in seqs
                           for s in group})
            counting = {
                (seq, url): _Counting.of_row(url, *rest)
                for seq, url, *rest in conn.execute(
                    """SELECT seq, canonical_url, count, first_seen, last_seen, applied, hints_key FROM sighting_counts
                       WHERE (seq, canonical_url) IN
                             (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))""",
                    (json.dumps(wanted),),
                )
            }
            if len(heads) < len(seqs) or len(counting) < len(wanted):  # a head or a URL's row is missing
                unseeded = [seq for mid, seq in seqs.items()
                            if mid not in heads or any((seq, s.canonical_url) not in counting for s in grouped[mid])]
                heads.update((head.media_id, head) for head in self._seed_rows(conn, unseeded, counting))
            whole: list[str] = []  # records that take the whole read-merge-write
            counted: list[tuple[int, list[_Counting]]] = []
            for media_id, seq in seqs.items():
                touched: dict[str, _Counting] = {}
                for sighting in grouped[media_id]:
                    row = counting.get((seq, sighting.canonical_url))
                    if row is None or not row.counts(sighting):
                        whole.append(media_id)
                        break
                    row.add(sighting)
                    touched[row.canonical_url] = row
                else:
                    if changed_rows := [row for row in touched.values() if row.added]:  # none: all redeliveries
                        counted.append((seq, changed_rows))
            self._store_counts(conn, counted)
            if whole:
                changed = [
                    _Write(seq, old, merge.add_sightings(old, grouped[media_id]))
                    for media_id, (seq, old) in self._load_many(conn, whole).items()
                ]
                self._store_many(conn, [w for w in changed if w.record is not w.old])
                heads.update((w.record.media_id, RecordHead.of(w.record)) for w in changed)
        return [heads.get(media_id) for media_id, _ in items]

    @staticmethod
    def _seed_rows(
        conn: sqlite3.Connection, seqs: list[int], counting: dict[tuple[int, str], _Counting]
    ) -> list[RecordHead]:
        """Make the head and the sighting rows of the records ``seqs`` that they lack, from the head and sightings of
        their JSON (rows are not written with a new record, see _SIGHTING_COUNTS); add the new rows to ``counting``
        and return the heads. Rows that exist stay: they are as new as the JSON, or newer."""
        heads: list[RecordHead] = []
        new_heads: list[tuple[int, str, str]] = []
        new_rows: list[tuple[Any, ...]] = []
        for seq, doc, has_head in conn.execute(
            """SELECT d.seq, d.doc, h.seq IS NOT NULL FROM docs d LEFT JOIN heads h ON h.seq = d.seq
               WHERE d.seq IN (SELECT value FROM json_each(?))""",
            (json.dumps(seqs),),
        ):
            view = _SeedView.model_validate_json(doc)
            head = view.head()
            heads.append(head)
            if not has_head:
                new_heads.append((seq, head.dedup, head.scores))
            for sighting in view.sightings:
                if (seq, sighting.canonical_url) not in counting:
                    counting[seq, sighting.canonical_url] = _Counting.of_sighting(sighting)
                    new_rows.append(_count_row(seq, sighting))
        conn.executemany("INSERT OR IGNORE INTO sighting_counts VALUES (?, ?, ?, ?, ?, ?, ?)", new_rows)
        conn.executemany("INSERT INTO heads (seq, dedup, scores) VALUES (?, ?, ?)", new_heads)
        return heads

    @staticmethod
    def _store_counts(conn: sqlite3.Connection, counted: list[tuple[int, list[_Counting]]]) -> None:
        """Write the rows of sighting_counts that URL hits counted up, and what they change of their records' ``media``
        rows (time range, sighting total); the record's JSON, text, tags, URLs and hashes stay as they are."""
        if not counted:
            return
        conn.executemany(
            "UPDATE sighting_counts SET count = ?, first_seen = ?, last_seen = ?, applied = ? "
            "WHERE seq = ? AND canonical_url = ?",
            [(row.count, row.first, row.last, row.marks_text(), seq,
              row.canonical_url) for seq, rows in counted for row in rows],
        )
        conn.executemany(
            "UPDATE media SET last_seen = max(last_seen, ?), sightings = sightings + ? WHERE seq = ?",
            [(max(row.last for row in rows), sum(row.added for row in rows), seq) for seq, rows in counted],
        )
        # apart, and only where a report is older than the URL's: naming first_seen in an UPDATE rewrites the
        # record's entry in the time index (media_by_time) even when the value stays
        earlier = []
        for seq, rows in counted:
            if moved := [row.first for row in rows if row.earlier]:
                first = min(moved)
                earlier.append((first, seq, first))
        conn.executemany("UPDATE media SET first_seen = ? WHERE seq = ? AND first_seen > ?", earlier)
        conn.executemany("INSERT INTO changes (seq) VALUES (?)", [(seq,) for seq, _ in counted])

    def record_review(self, media_id: str, review: Review) -> MediaRecord:
        with self._write() as conn:
            loaded = self._load(conn, media_id)
            if loaded is None:
                raise UnknownMedia(media_id)
            seq, old = loaded
            reviewed = MediaRecord.model_validate({**old.model_dump(), "review": review.model_dump()})
            self._store_many(conn, [_Write(seq, old, reviewed)])
            conn.execute(
                "INSERT INTO reviews (media_id, review, previous) VALUES (?, ?, ?)",
                (media_id, review.model_dump_json(), _review(old)),
            )
            return reviewed

    # --- SearchIndex: lookups ---------------------------------------------------------------
    def get(self, media_id: str) -> MediaRecord | None:
        with self._read() as conn:
            loaded = self._load(conn, media_id)
            return None if loaded is None else loaded[1]

    def find_by_canonical_url(self, url: str) -> MediaRecord | None:
        with self._read() as conn:
            row = conn.execute(
                """SELECT u.seq, d.doc, b.bulk FROM urls u JOIN docs d ON d.seq = u.seq
                   LEFT JOIN bulks b ON b.seq = u.seq WHERE u.ukey = ? AND u.canonical_url = ?""",
                (_ukey(url), url),
            ).fetchone()
            if row is None:
                return None
            seq, doc, bulk = row
            return self._live(conn, {seq: MediaRecord.model_validate_json(_joined_document(doc, bulk))})[seq]

    def media_ids_by_canonical_url(self, urls: Sequence[str]) -> dict[str, str]:
        wanted = set(urls)
        if not wanted:
            return {}
        with self._read() as conn:
            rows = conn.execute(
                """SELECT u.canonical_url, m.media_id FROM urls u JOIN media m ON m.seq = u.seq
                   WHERE u.ukey IN (SELECT value FROM json_each(?))""",
                (json.dumps([_ukey(url) for url in wanted]),),
            ).fetchall()
        return {url: media_id for url, media_id in rows if url in wanted}  # a URL has one row (_store_many)

    def find_by_sha256(self, sha256: str) -> MediaRecord | None:
        # The media id is the sha256 of the bytes (the contract enforces it), so this is a get.
        return self.get(sha256)

    def review_history(self, media_id: str) -> list[ReviewEvent]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT review, previous FROM reviews WHERE media_id = ? ORDER BY id", (media_id,)
            ).fetchall()
        return [
            ReviewEvent(media_id=media_id, review=Review.model_validate_json(review), previous=previous)
            for review, previous in rows
        ]

    # --- near duplicates --------------------------------------------------------------------
    def _memory_index(self, conn: sqlite3.Connection, kind: str) -> HashMemoryIndex:
        """The in-memory index of ``kind``, caught up with every hash row written since last time."""
        spec = HASH_KINDS[kind]
        memory = self._memory.get(kind)
        if memory is None:
            memory = HashMemoryIndex(spec.bits, max_keys=self._max_keys)
            self._memory[kind], self._memory_upto[kind] = memory, 0
        rows = conn.execute(
            "SELECT id, seq, packed FROM hashes WHERE id > ? AND kind = ? ORDER BY id", (self._memory_upto[kind], kind)
        ).fetchall()
        if rows:
            ids, seqs, packed = zip(*rows, strict=True)
            size = spec.bits // 8
            counts = np.fromiter((len(p) // size for p in packed), dtype=np.int64, count=len(packed))
            words = np.frombuffer(b"".join(packed), dtype=">u8").astype(np.uint64)
            memory.add(words.reshape(-1, spec.bits // 64), np.repeat(np.array(seqs, dtype=np.int64), counts))
            self._memory_upto[kind] = ids[-1]
        return memory

    def near_duplicates(self, hash_hex: str, radius: int, kind: HashKind = "pdq") -> list[tuple[str, int]]:
        spec = HASH_KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown hash kind {kind!r}: one of {', '.join(HASH_KINDS)}")
        query = hamming.parse_hash(hash_hex, spec)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        with self._read() as conn:
            owners, _ = self._memory_index(conn, kind).search(words_of([hash_hex], spec.bits)[0], radius)
            if len(owners) == 0:
                return []
            # The memory index may hold hashes a record no longer has: the table has the last word.
            rows = conn.execute(
                """SELECT m.media_id, h.packed FROM hashes h JOIN media m ON m.seq = h.seq
                   WHERE h.kind = ? AND h.seq IN (SELECT value FROM json_each(?))""",
                (kind, json.dumps(np.unique(owners).tolist())),
            ).fetchall()
        size = spec.bits // 8
        grouped = [
            (media_id, [int.from_bytes(packed[i : i + size], "big") for i in range(0, len(packed), size)])
            for media_id, packed in rows
        ]
        return hamming.rank(query, grouped, radius)

    # --- moderation search and dashboards ---------------------------------------------------
    def search(self, query: SearchQuery) -> SearchPage:
        """One page by keyset, and the total, from the in-memory mirror when this index keeps one
        (see :mod:`storage.search_memory`) and it can answer the query, else from SQL."""
        after, snapshot = decode_cursor(query) or (None, None)
        with self._read() as conn:
            if snapshot is None:
                snapshot = conn.execute("SELECT coalesce(max(seq), 0) FROM media").fetchone()[0]
            if self._columns is not None and self._columns.supports(query):
                self._catch_up(conn)
                words = text_terms(query.text) if query.text else []
                candidates = mirror.intersect([self._word_seqs(conn, w) for w in words]) if words else None
                total, seqs = self._columns.select(query, candidates, snapshot, after)
            else:
                total, seqs = self._search_sql(conn, query, snapshot, after)
            found = self._live(conn, {
                seq: MediaRecord.model_validate_json(_joined_document(doc, bulk))
                for seq, doc, bulk in conn.execute(
                    """SELECT d.seq, d.doc, b.bulk FROM docs d LEFT JOIN bulks b ON b.seq = d.seq
                       WHERE d.seq IN (SELECT value FROM json_each(?))""",
                    (json.dumps(seqs[: query.limit]),),
                )
            })
        items = [found[seq] for seq in seqs[: query.limit]]
        next_cursor = None
        if len(seqs) > query.limit:
            last = items[-1]
            next_cursor = encode_cursor(query, [sort_value(last, query.sort), last.media_id], snapshot)
        return SearchPage(total=total, items=items, next=next_cursor)

    @staticmethod
    def _search_sql(
        conn: sqlite3.Connection, query: SearchQuery, snapshot: int, after: list[Any] | None
    ) -> tuple[int, list[int]]:
        """``(total, seqs of the page plus one)`` in SQL.

        A search with text or list filters is answered by FTS5 first (text and filters intersect
        there), in one pass that yields every match's sort key: that pass gives the total, and,
        when the matches are few, the page by sorting them here. With many matches the page comes
        from walking the sort index instead, which stops after one page."""
        desc = descending(query.sort)
        column = "m.score_sort" if query.sort.startswith("score") else "m.first_seen"
        selection, params = _selection(query, snapshot)
        if _fts_expression(query) is not None:
            matches = conn.execute(f"SELECT {column}, m.media_id, m.seq {selection}", params).fetchall()
            total = len(matches)
            if total <= SORT_MATCHES_LIMIT:
                keyed = sorted(matches, reverse=desc)
                if after is not None:
                    mark = tuple(after)
                    keyed = [m for m in keyed if (m[:2] < mark if desc else m[:2] > mark)]
                return total, [seq for _, _, seq in keyed[: query.limit + 1]]
        else:
            total = conn.execute(f"SELECT count(*) {selection}", params).fetchone()[0]
        # Score order walks (score_sort, mkey): mkeys sort as media ids do, so the order and the
        # cursor's position are the same as by (score, media_id).
        by_score = column == "m.score_sort"
        keys = [column, "m.mkey", "m.media_id"] if by_score else [column, "m.media_id"]
        selection, params = _selection(
            query, snapshot, by_sort_index="media_by_score" if by_score else "media_by_time"
        )
        if after is not None:
            selection += f" AND ({', '.join(keys)}) {'<' if desc else '>'} ({', '.join('?' * len(keys))})"
            params += [after[0], _mkey(after[1]), after[1]] if by_score else after
        order = "DESC" if desc else "ASC"
        rows = conn.execute(
            f"SELECT m.seq {selection} ORDER BY {', '.join(k + ' ' + order for k in keys)} LIMIT ?",
            [*params, query.limit + 1],
        )
        return total, [seq for (seq,) in rows]

    # --- the in-memory mirror (long-lived processes only) ------------------------------------
    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Load the records written since the last query, and reload the ones rewritten since."""
        assert self._columns is not None
        changed = conn.execute("SELECT id, seq FROM changes WHERE id > ? ORDER BY id", (self._change_upto,)).fetchall()
        if changed:
            self._change_upto = changed[-1][0]
            seqs = sorted({seq for _, seq in changed if seq <= self._columns.upto})
            for start in range(0, len(seqs), MIRROR_CHUNK):
                self._columns.set_rows(self._mirror_rows(
                    conn, "seq IN (SELECT value FROM json_each(?))", json.dumps(seqs[start : start + MIRROR_CHUNK])
                ))
        while rows := self._mirror_rows(conn, "seq > ? ORDER BY seq LIMIT ?", self._columns.upto, MIRROR_CHUNK):
            self._columns.set_rows(rows)

    @staticmethod
    def _mirror_rows(conn: sqlite3.Connection, where: str, *params: Any) -> list[tuple[Any, ...]]:
        columns = ", ".join(mirror.ROW_FIELDS)
        return [
            (*row[:10], _json_list(row[10]), _json_list(row[11]))
            for row in conn.execute(f"SELECT {columns} FROM media WHERE {where}", params)
        ]

    def _word_seqs(self, conn: sqlite3.Connection, word: str) -> np.ndarray:
        """Sorted seqs of the records whose text holds ``word``: the cached list caught up, or FTS5's."""
        match = 'body : "' + word.replace('"', '""') + '"'
        upto, change = self._columns.upto, self._change_upto  # _catch_up ran in this transaction
        cached = self._words.get(word)
        if cached is None:
            rows = conn.execute("SELECT rowid FROM media_text WHERE media_text MATCH ? AND rowid <= ?", (match, upto))
            seqs = np.fromiter((r for (r,) in rows), dtype=np.int64)
        else:
            seqs, was_upto, was_change = cached
            if (was_upto, was_change) == (upto, change):
                return seqs  # nothing written since: no queries on the hot path
            changed = np.array(sorted({s for (s,) in conn.execute(
                "SELECT seq FROM changes WHERE id > ? AND id <= ? AND seq <= ?", (was_change, change, was_upto)
            )}), dtype=np.int64)
            holding = np.array([r for (r,) in conn.execute(
                "SELECT rowid FROM media_text WHERE media_text MATCH ? AND rowid IN (SELECT value FROM json_each(?))",
                (match, json.dumps(changed.tolist())),
            )], dtype=np.int64) if len(changed) else changed
            new = np.array([r for (r,) in conn.execute(
                "SELECT rowid FROM media_text WHERE media_text MATCH ? AND rowid > ? AND rowid <= ? ORDER BY rowid",
                (match, was_upto, upto),
            )], dtype=np.int64)
            seqs = mirror.caught_up(seqs, changed, np.sort(holding), new)
        self._words.put(word, seqs, upto, change)
        return seqs

    def aggregate(self, query: SearchQuery | None = None) -> Aggregations:
        selection, params = _selection(query or SearchQuery(), None)
        selected = f"SELECT m.seq {selection}"
        with self._read() as conn:

            def pairs(sql: str) -> dict[str, int]:
                return {str(k): v for k, v in conn.execute(sql, params).fetchall()}

            total = conn.execute(f"SELECT count(*) {selection}", params).fetchone()[0]
            by_verdict = pairs(f"SELECT m.verdict, count(*) {selection} GROUP BY 1")
            by_platform = pairs(
                f"SELECT p.value, count(*) FROM media m, json_each(m.platforms) p "
                f"WHERE m.seq IN ({selected}) GROUP BY 1"
            )
            by_day = pairs(f"SELECT date(m.first_seen, 'unixepoch'), count(*) {selection} GROUP BY 1 ORDER BY 1")
            by_dedup = pairs(f"SELECT m.dedup, count(*) {selection} GROUP BY 1")
            sightings, distinct_urls = conn.execute(
                f"SELECT coalesce(sum(m.sightings), 0), coalesce(sum(m.urls), 0) {selection}", params
            ).fetchone()
            bins = pairs(
                f"SELECT min(CAST(m.score * {HISTOGRAM_BINS} AS INTEGER), {HISTOGRAM_BINS - 1}), count(*) "
                f"{selection} AND m.score IS NOT NULL GROUP BY 1"
            )
            # Sorted by numpy, a stage at a time: SQLite's ORDER BY over millions of rows cost half the call.
            times: dict[str, list[float]] = {}
            for (stage,) in conn.execute("SELECT DISTINCT stage FROM timings").fetchall():
                rows = conn.execute(
                    f"SELECT seconds FROM timings WHERE stage = ? AND seq IN ({selected})", [stage, *params]
                )
                times[stage] = np.sort(np.fromiter((seconds for (seconds,) in rows), dtype=np.float64)).tolist()
        return Aggregations(
            total=total,
            by_verdict=by_verdict,
            by_platform=by_platform,
            by_day=by_day,
            score_histogram=[bins.get(str(i), 0) for i in range(HISTOGRAM_BINS)],
            stage_seconds={stage: stage_times(values) for stage, values in times.items() if values},
            by_dedup=by_dedup,
            sightings=sightings,
            distinct_urls=distinct_urls,
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
