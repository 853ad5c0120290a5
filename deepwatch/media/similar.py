"""Near-duplicates of one fingerprint among the records of the index, each confirmed by the matcher.

The index answers "which records have a hash within r bits of this one" (``SearchIndex.near_duplicates``),
fast but blind to what the hashes mean: a re-encode is found by its frames' PDQ, a flipped copy only by the
PDQ of our mirror images, a cropped one by that of our centre crops. So every variant hash the fingerprint
has is asked, and each record found is then given to :func:`deepwatch.media.matching.match` with its
stored fingerprints, which says ``duplicate``, ``variant`` (same scene, other faces) or ``different``.

:func:`query_hashes` and :func:`nearest` are pure; :func:`find_similar` does the look-ups on an index it is
given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepwatch.contracts import Fingerprints, MediaRecord
    from deepwatch.media.fingerprint import MediaFingerprint
    from deepwatch.media.matching import Match


@dataclass(frozen=True)
class QueryHash:
    kind: str  # the index's hash kind: "pdq", "videohash" or "pdq_faces"
    via: str  # which of ours: "frame", "mirror" (of the left-right mirror image), "crop" (centred 90 %), "video"
    value: str  # hex


@dataclass(frozen=True)
class Candidate:
    media_id: str
    kind: str
    distance: int  # bits, the least over our hashes of this kind and the record's
    via: str  # which of our hashes came that close


@dataclass(frozen=True)
class Similar:
    candidate: Candidate
    record: MediaRecord
    match: Match  # of our fingerprint and the record's stored one; the same for every kind a record is found by


def query_hashes(fingerprints: Fingerprints) -> list[QueryHash]:
    """Every hash of ``fingerprints`` worth asking the index for, each once (frames that did not change
    between samples hash alike)."""
    groups: list[tuple[str, str, Iterable[str]]] = [
        ("videohash", "video", [fingerprints.videohash] if fingerprints.videohash else []),
        ("pdq", "frame", fingerprints.pdq),
        ("pdq", "mirror", fingerprints.pdq_flip),
        ("pdq", "crop", fingerprints.pdq_crop),
        ("pdq_faces", "frame", fingerprints.pdq_faces),
        ("pdq_faces", "mirror", fingerprints.pdq_faces_flip),
    ]
    seen: set[tuple[str, str]] = set()
    out = []
    for kind, via, values in groups:
        for value in values:
            if (kind, value) not in seen:
                seen.add((kind, value))
                out.append(QueryHash(kind, via, value))
    return out


def nearest(hits: Iterable[tuple[QueryHash, str, int]], exclude: str | None = None) -> list[Candidate]:
    """From ``(query hash, media_id, distance)`` hits, the closest per record and kind, closest first (ties by
    kind, then media_id); ``exclude`` (the queried media itself, when recorded) is left out."""
    best: dict[tuple[str, str], Candidate] = {}
    for query, media_id, distance in hits:
        if media_id == exclude:
            continue
        key = (media_id, query.kind)
        if key not in best or distance < best[key].distance:
            best[key] = Candidate(media_id, query.kind, distance, query.via)
    return sorted(best.values(), key=lambda c: (c.distance, c.kind, c.media_id))


def find_similar(
    index: Any, fingerprints: Fingerprints, radius: dict[str, int], *, mine: MediaFingerprint | None = None
) -> list[Similar]:
    """Records of ``index`` (a :class:`storage.index.SearchIndex`) near ``fingerprints`` by any of its hashes
    within ``radius`` bits per kind, each with the matcher's verdict against its stored fingerprints.

    ``mine``: the fingerprint as computed, when there is one (it keeps what the stored contract drops, such
    as the kind and the duration); otherwise it is rebuilt from ``fingerprints``.
    """
    from deepwatch.media.fingerprint import MediaFingerprint
    from deepwatch.media.matching import match

    hits = [
        (query, media_id, distance)
        for query in query_hashes(fingerprints)
        for media_id, distance in index.near_duplicates(query.value, radius[query.kind], kind=query.kind)
    ]
    candidates = nearest(hits, exclude=fingerprints.sha256)
    ours = mine if mine is not None else MediaFingerprint.from_contract(fingerprints)
    records: dict[str, MediaRecord | None] = {}
    verdicts: dict[str, Match] = {}
    found = []
    for candidate in candidates:
        if candidate.media_id not in records:
            records[candidate.media_id] = index.get(candidate.media_id)  # None: removed since the search
        record = records[candidate.media_id]
        if record is None:
            continue
        if candidate.media_id not in verdicts:
            verdicts[candidate.media_id] = match(ours, stored_fingerprint(record))
        found.append(Similar(candidate, record, verdicts[candidate.media_id]))
    return found


def stored_fingerprint(record: MediaRecord) -> MediaFingerprint:
    """What the matcher needs of a record, from its stored fingerprints."""
    from deepwatch.media.fingerprint import MediaFingerprint

    return MediaFingerprint.from_contract(record.fingerprints, kind=record.kind, duration=record.media.duration)
