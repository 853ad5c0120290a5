"""The search index: one document per distinct media item, whatever the backend.

:class:`SearchIndex` is what the stream, the API and the CLI program against; :func:`open_index`
picks the backend from the settings (SQLite embedded, Elasticsearch in production), so callers
never know which one they hold. Merging (``storage.merge``) and near-duplicate search
(``storage.hamming``) are pure modules every backend shares, so backends cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from storage.hamming import HASH64, HASH256, HashSpec

if TYPE_CHECKING:
    from deepwatch.contracts import MediaRecord, Sighting
    from deepwatch.settings import Settings

HashKind = Literal["pdq", "videohash", "pdq_faces"]

# Which fingerprint field feeds which kind, and its size.
HASH_KINDS: dict[str, HashSpec] = {"videohash": HASH64, "pdq": HASH256, "pdq_faces": HASH256}


class SearchIndexError(Exception):
    """The index could not do what was asked; the backend's own exception is the ``__cause__``."""


class UnknownMedia(SearchIndexError, LookupError):
    """No record with this media id (e.g. a sighting for media never recorded)."""

    def __init__(self, media_id: str):
        self.media_id = media_id
        super().__init__(f"no media record {media_id!r}")


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

    def add_sighting(self, media_id: str, sighting: Sighting) -> MediaRecord:
        """Count one more sighting (same canonical URL: count += sighting.count; new URL: appended).

        Raises :class:`UnknownMedia` if there is no such record. Not idempotent by design: each
        call is one event.
        """
        ...

    def get(self, media_id: str) -> MediaRecord | None: ...

    def find_by_canonical_url(self, url: str) -> MediaRecord | None:
        """The record last written with a sighting at this canonical URL."""
        ...

    def find_by_sha256(self, sha256: str) -> MediaRecord | None: ...

    def near_duplicates(self, hash_hex: str, radius: int, kind: HashKind = "pdq") -> list[tuple[str, int]]:
        """``(media_id, distance)`` for every record with a hash of ``kind`` within ``radius`` bits
        (a record's distance is the minimum over its hashes), by distance then media_id. Exact."""
        ...

    def close(self) -> None: ...


def open_index(settings: Settings) -> SearchIndex:
    """The index the settings ask for. Backends import lazily: SQLite needs nothing extra."""
    if settings.index_backend == "sqlite":
        from storage.index_sqlite import SqliteIndex

        return SqliteIndex(settings.index_path)
    if settings.index_backend == "elasticsearch":
        raise NotImplementedError("elasticsearch index backend: issue 3, not built yet")
    raise ValueError(f"unknown index backend {settings.index_backend!r}")
