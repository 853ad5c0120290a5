"""The search index: one document per distinct media item, whatever the backend.

:class:`SearchIndex` is what the stream, the API and the CLI program against; :func:`open_index`
picks the backend from the settings (SQLite embedded, Elasticsearch in production), so callers
never know which one they hold. Merging (``storage.merge``) and near-duplicate search
(``storage.hamming``) are pure modules every backend shares, so backends cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from deepwatch.contracts import record_scores_json
from storage.hamming import HASH64, HASH256, HashSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from deepwatch.contracts import DedupClass, MediaRecord, Review, Sighting
    from deepwatch.settings import Settings
    from storage.query import Aggregations, ReviewEvent, SearchPage, SearchQuery

HashKind = Literal["pdq", "videohash", "pdq_faces"]

# Which fingerprint field feeds which kind, and its size.
HASH_KINDS: dict[str, HashSpec] = {"videohash": HASH64, "pdq": HASH256, "pdq_faces": HASH256}


# The radius `similar` uses by default: videohash differs in about 10 of 64 bits between re-encodes
# of one clip; 31 of 256 is PDQ's usual match threshold.
DEFAULT_RADIUS: dict[str, int] = {"videohash": 10, "pdq": 31, "pdq_faces": 31}


class SearchIndexError(Exception):
    """The index could not do what was asked; the backend's own exception is the ``__cause__``."""


class UnknownMedia(SearchIndexError, LookupError):
    """No record with this media id (e.g. a sighting for media never recorded)."""

    def __init__(self, media_id: str):
        self.media_id = media_id
        super().__init__(f"no media record {media_id!r}")


@dataclass(frozen=True)
class RecordHead:
    """What a URL hit's result names of its record (``stream.records.result_of``), without the rest of it:
    :meth:`SearchIndex.add_sightings` returns these, so that a backend need not decode the whole record (tens
    of kilobytes of fingerprints and face scores) for every repost of a known URL."""

    media_id: str
    dedup: DedupClass
    # the result's verdict, score and detector scores as its JSON writes them (deepwatch.contracts.record_scores_json):
    # a backend that stores them so hands them on without decoding them
    scores: str

    @classmethod
    def of(cls, record: MediaRecord) -> RecordHead:
        return cls(record.media_id, record.dedup, record_scores_json(record.verdict, record.score, record.detectors))


def record_hashes(record: MediaRecord, kind: str) -> list[str]:
    """The hashes of one kind a record is searchable by."""
    fp = record.fingerprints
    if kind == "videohash":
        return [fp.videohash] if fp.videohash else []
    if kind == "pdq":
        return list(fp.pdq)
    if kind == "pdq_faces":
        return list(fp.pdq_faces)
    raise ValueError(f"unknown hash kind {kind!r}: one of {', '.join(HASH_KINDS)}")


def changed_record(old: MediaRecord, new: MediaRecord | None) -> MediaRecord | None:
    """What :meth:`SearchIndex.update_many` writes for a ``change`` that gave ``new``: None when nothing changed."""
    if new is None or new == old:
        return None
    if new.media_id != old.media_id:
        raise ValueError(f"an update must keep the media_id: {old.media_id} became {new.media_id}")
    return new


@runtime_checkable
class SearchIndex(Protocol):
    """Every method is atomic on its own, across threads and processes: a read-merge-write never
    loses a concurrent writer's sighting or detector score."""

    def upsert(self, record: MediaRecord) -> MediaRecord:
        """Write ``record``; if its media_id exists, merge (``storage.merge.merge_records``).

        Idempotent: writing the same record twice leaves what writing it once did. Returns the
        stored record.
        """
        ...

    def upsert_many(self, records: Iterable[MediaRecord]) -> int:
        """Bulk :meth:`upsert` (same merge, same guarantees), in as few round trips as the backend
        allows; records sharing a media_id merge in order. Returns how many were written."""
        ...

    def add_sighting(self, media_id: str, sighting: Sighting) -> MediaRecord:
        """Count one more sighting (same canonical URL: count += sighting.count; new URL: appended).

        Raises :class:`UnknownMedia` if there is no such record. Each call is one event; a sighting
        that carries its event position (``Sighting.applied``) is idempotent: an event at or below
        the stored watermark of its URL is a redelivery and changes nothing
        (``storage.merge.add_sighting``).
        """
        ...

    def add_sightings(self, items: Sequence[tuple[str, Sighting]]) -> list[RecordHead | None]:
        """:meth:`add_sighting` for each ``(media_id, sighting)`` in order, in as few round trips as the
        backend allows (the stream's URL hits come in batches), one write per record. Returns for each
        item the head of its record, or None where there is no such record (nothing is raised for it)."""
        ...

    def update_many(
        self, media_ids: Sequence[str], change: Callable[[MediaRecord], MediaRecord | None]
    ) -> list[MediaRecord]:
        """Rewrite each stored record of ``media_ids`` as ``change`` makes it, each read-change-write atomic as
        :meth:`upsert`'s: ``change`` sees the record as stored at that moment, so a sighting counted meanwhile
        is kept, not undone. ``change`` returns None (or an equal record) to leave a record as it is, and may
        be called more than once for one record (the backend retries on a conflict); it must keep the
        media_id. Ids without a record are skipped. Returns the records written, in the order given."""
        ...

    def get(self, media_id: str) -> MediaRecord | None: ...

    def find_by_canonical_url(self, url: str) -> MediaRecord | None:
        """The record last written with a sighting at this canonical URL."""
        ...

    def media_ids_by_canonical_url(self, urls: Sequence[str]) -> dict[str, str]:
        """For each of ``urls`` that has a record, the media id of the one :meth:`find_by_canonical_url` gives.
        The stream asks for all the URLs of a batch its table does not know at once (a worker whose table is
        empty, after a broker that kept its topics in memory restarted, say), and needs nothing else of them."""
        ...

    def find_by_sha256(self, sha256: str) -> MediaRecord | None: ...

    def near_duplicates(self, hash_hex: str, radius: int, kind: HashKind = "pdq") -> list[tuple[str, int]]:
        """``(media_id, distance)`` for every record with a hash of ``kind`` within ``radius`` bits
        (a record's distance is the minimum over its hashes), by distance then media_id. Exact."""
        ...

    def search(self, query: SearchQuery) -> SearchPage:
        """One page of the records matching ``query``, in its sort order (ties by media_id).

        Records written after page one was served never show up on later pages (nor in their
        ``total``): the cursor bounds the search to what page one could see. A cursor from another
        query raises ContractError on ``cursor``."""
        ...

    def aggregate(self, query: SearchQuery | None = None) -> Aggregations:
        """Dashboard counts over the records ``query`` selects (all when None)."""
        ...

    def record_review(self, media_id: str, review: Review) -> MediaRecord:
        """Set the record's human review and append it to the audit trail. Raises UnknownMedia."""
        ...

    def review_history(self, media_id: str) -> list[ReviewEvent]:
        """The audit trail of one record, oldest first."""
        ...

    def close(self) -> None: ...


def open_index(settings: Settings, *, long_lived: bool = False) -> SearchIndex:
    """The index the settings ask for. Backends import lazily: SQLite needs nothing extra.

    ``long_lived``: the caller (the API) will serve many searches, so an embedded backend may spend
    a load and memory up front to answer them faster (SQLite's in-memory search mirror)."""
    if settings.index_backend == "sqlite":
        from storage.index_sqlite import SqliteIndex

        return SqliteIndex(settings.index_path, search_memory=long_lived)
    if settings.index_backend == "elasticsearch":
        from storage.index_es import ElasticsearchIndex

        return ElasticsearchIndex.from_settings(settings)
    raise ValueError(f"unknown index backend {settings.index_backend!r}")


def iter_search(index: SearchIndex, query: SearchQuery) -> Iterator[MediaRecord]:
    """Every record ``query`` matches, a full page at a time by cursor (its own limit and cursor are ignored)."""
    from storage.query import MAX_LIMIT

    page_query = query.model_copy(update={"limit": MAX_LIMIT, "cursor": None})
    while True:
        page = index.search(page_query)
        yield from page.items
        if not page.next:
            return
        page_query = page_query.model_copy(update={"cursor": page.next})


def similar_records(index: SearchIndex, record: MediaRecord, radius: dict[str, int] | None = None) -> list[dict]:
    """Every other record near ``record`` by any of its hashes: ``{media_id, kind, distance}``,
    closest first (one entry per record and kind)."""
    radius = {**DEFAULT_RADIUS, **(radius or {})}
    best: dict[tuple[str, str], int] = {}
    for kind in HASH_KINDS:
        for h in record_hashes(record, kind):
            for media_id, distance in index.near_duplicates(h, radius[kind], kind=kind):  # type: ignore[arg-type]
                if media_id != record.media_id and distance < best.get((media_id, kind), distance + 1):
                    best[(media_id, kind)] = distance
    found = [{"media_id": m, "kind": k, "distance": d} for (m, k), d in best.items()]
    return sorted(found, key=lambda f: (f["distance"], f["kind"], f["media_id"]))
