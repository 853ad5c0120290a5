"""How two versions of one media record combine; pure, so every index backend merges alike.

The stream may record the same media item more than once (a redelivered message, a second
worker, a rescore), and sightings arrive on their own. A write must therefore never lose what an
earlier write knew: sightings and detector scores are unions, time ranges widen, and a field the
newer record leaves empty keeps its older value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from deepwatch.contracts import (
    FINGERPRINT_PARALLEL,
    EventPosition,
    Fingerprints,
    MediaInfo,
    MediaRecord,
    Sighting,
    StoredObjects,
)


def already_applied(old: Sighting, new: Sighting) -> bool:
    """``new`` carries event positions that ``old``'s watermark covers: a redelivered event."""
    if not new.applied:
        return False
    marks = old.applied
    for partition, position in new.applied.items():  # a loop, not all(...): this runs for every hit
        mark = marks.get(partition)
        if mark is None or not mark.covers(position):
            return False
    return True


def merge_applied(old: Sighting, new: Sighting) -> dict[str, EventPosition]:
    """Per partition the later of the two watermarks."""
    merged = dict(old.applied)
    for partition, position in new.applied.items():
        mark = merged.get(partition)
        if mark is None or not mark.covers(position):
            merged[partition] = position
    return merged


def merge_sighting(old: Sighting, new: Sighting, *, add_counts: bool) -> Sighting:
    """One URL seen again. ``add_counts`` for a new event (the stream's ``add_sighting``); without
    it the two are views of the same history (an upsert replaying a record), so the larger count
    is the truth and adding would double-count. A new event the watermark already covers
    (:func:`already_applied`) changes nothing."""
    if add_counts and already_applied(old, new):
        return old
    return _combined(old, new, add_counts=add_counts)


def _combined(old: Sighting, new: Sighting, *, add_counts: bool) -> Sighting:
    count = old.count + new.count if add_counts else max(old.count, new.count)
    # The first report of a URL names where it was found; later ones only refresh the hints.
    return old.copied_with(
        first_seen=min(old.first_seen, new.first_seen),
        last_seen=max(old.last_seen, new.last_seen),
        count=count,
        hints=new.hints if new.hints is not None else old.hints,
        applied=merge_applied(old, new),
    )


def merge_sightings(old: list[Sighting], new: list[Sighting], *, add_counts: bool) -> list[Sighting]:
    """Keyed by canonical URL; known URLs keep their place, new ones are appended in order."""
    merged = {s.canonical_url: s for s in old}
    for s in new:
        known = merged.get(s.canonical_url)
        merged[s.canonical_url] = s if known is None else merge_sighting(known, s, add_counts=add_counts)
    return list(merged.values())


def _fill(old: Any, new: Any) -> dict[str, Any]:
    """Field-wise: the newer value unless it is None."""
    data = old.model_dump()
    data.update({k: v for k, v in new.model_dump().items() if v is not None})
    return data


def _merge_fingerprints(old: Fingerprints, new: Fingerprints) -> Fingerprints:
    # Hashes are computed in groups (a lead list and the lists parallel to it), so a group is taken
    # whole from the newer side that has it; an empty lead means "not computed", not "none".
    data = {"sha256": new.sha256, "videohash": new.videohash if new.videohash is not None else old.videohash}
    for lead in {*FINGERPRINT_PARALLEL.values(), "pdq_faces"}:
        side = new if getattr(new, lead) else old
        data[lead] = getattr(side, lead)
        data |= {name: getattr(side, name) for name, of in FINGERPRINT_PARALLEL.items() if of == lead}
    return Fingerprints.model_validate(data)


def merge_records(old: MediaRecord, new: MediaRecord) -> MediaRecord:
    """``new`` written over ``old`` (same media_id) without losing anything ``old`` knew."""
    if old.media_id != new.media_id:
        raise ValueError(f"cannot merge {new.media_id} into {old.media_id}")
    data = old.model_dump()
    data.update({k: v for k, v in new.model_dump().items() if v is not None})
    # A new verdict comes with its own error state: an old failure must not stick to a new score.
    if new.verdict is not None:
        data["error"] = new.error
    data["fingerprints"] = _merge_fingerprints(old.fingerprints, new.fingerprints).model_dump()
    data["objects"] = StoredObjects.model_validate(_fill(old.objects, new.objects)).model_dump()
    data["media"] = MediaInfo.model_validate(_fill(old.media, new.media)).model_dump()
    data["sightings"] = [s.model_dump() for s in merge_sightings(old.sightings, new.sightings, add_counts=False)]
    data["detectors"] = {name: score.model_dump() for name, score in {**old.detectors, **new.detectors}.items()}
    # Face scores belong to one scoring and its frames, so they are not a union: a new scoring replaces
    # them whole (no faces this time is news too); a write without one (or a failed one) keeps the old.
    rescored = new.verdict is not None and new.verdict != "error"
    data["face_scores"] = [f.model_dump() for f in (new.face_scores if rescored else old.face_scores)]
    data["timings"] = {**old.timings, **new.timings}
    data["first_seen"] = min(old.first_seen, new.first_seen)
    data["last_seen"] = max(old.last_seen, new.last_seen)
    return MediaRecord.model_validate(data)


def add_sighting(record: MediaRecord, sighting: Sighting) -> MediaRecord:
    """A new event: the same URL counts up, a new URL is appended; the record's range widens.

    Idempotent per event when the sighting carries its position (``Sighting.applied``): a
    redelivered event returns ``record`` unchanged."""
    return add_sightings(record, [sighting])


def by_record(items: Iterable[tuple[str, Sighting]]) -> dict[str, list[Sighting]]:
    """``(media_id, sighting)`` pairs grouped per record, each group in the order given (for
    :func:`add_sightings`: every backend writes a record once per batch)."""
    grouped: dict[str, list[Sighting]] = {}
    for media_id, sighting in items:
        grouped.setdefault(media_id, []).append(sighting)
    return grouped


def add_sightings(record: MediaRecord, sightings: Iterable[Sighting]) -> MediaRecord:
    """:func:`add_sighting` for each of ``sightings`` in order; ``record`` itself when every one was
    a redelivery.

    Built with ``copied_with`` (a cheaper ``model_copy``), not validated again: the only rules these fields
    take part in (one sighting per canonical URL, ``first_seen <= last_seen``) hold by construction, and
    this is the stream's hottest path (every repost of a known URL)."""
    counted = count_sightings(record.sightings, record.first_seen, record.last_seen, sightings)
    if counted is None:
        return record
    known, first, last = counted
    return record.copied_with(sightings=known, first_seen=first, last_seen=last)


def count_sightings(
    known: list[Sighting], first: datetime, last: datetime, sightings: Iterable[Sighting]
) -> tuple[list[Sighting], datetime, datetime] | None:
    """What :func:`add_sightings` makes of a record's sightings and time range (``known``, ``first``,
    ``last``): the new ones, or None when every one of ``sightings`` was a redelivery. (SQLite's URL hits do the
    same per sighting row: ``storage.index_sqlite._Counting``.)"""
    by_url = {s.canonical_url: s for s in known}
    changed = False
    for sighting in sightings:
        seen = by_url.get(sighting.canonical_url)
        if seen is not None and already_applied(seen, sighting):
            continue
        by_url[sighting.canonical_url] = (
            sighting if seen is None else _combined(seen, sighting, add_counts=True)  # checked just above
        )
        first, last = min(first, sighting.first_seen), max(last, sighting.last_seen)
        changed = True
    return (list(by_url.values()), first, last) if changed else None
