"""What the stream does with one URL, decided from what the index already knows (pure, no I/O).

Two moments decide, because the second costs a download:

1. :func:`by_url` — before fetching: a canonical URL already recorded only adds a sighting.
2. :func:`by_content` — after fetching and fingerprinting: the same bytes (sha256) only add a
   sighting; a near-duplicate of a scored record becomes a record of its own that reuses the
   original's verdict and scores (``dedup="near"``, ``duplicate_of``), so a clip reposted ten
   thousand times is scored once; a *variant* (same scene, other faces: a face swap of a real clip)
   is scored as new media with ``variant_of`` set, because it must not inherit the original's verdict.

The records built here (:func:`sighting_of`, :func:`near_duplicate_record`) are pure functions of
their inputs, so a retried event builds the same record and the index's merge makes the retry a
no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from deepwatch.contracts import DedupClass, EventPosition, MediaRecord, Sighting, UrlDiscovered

if TYPE_CHECKING:
    from deepwatch.media.similar import Similar

Action = Literal["add_sighting", "reuse", "score"]
# Verdicts a near-duplicate may inherit: an error or a missing score is no verdict to copy.
REUSABLE_VERDICTS = frozenset({"fake", "uncertain", "real", "no_face"})


@dataclass(frozen=True)
class Decision:
    action: Action
    dedup: DedupClass
    target: str | None = None  # add_sighting: the record to add to; reuse: the original
    variant_of: str | None = None  # score: the record this one is a variant of


def by_url(known_media_id: str | None) -> Decision | None:
    """``known_media_id``: the record the canonical URL points at, if any."""
    if known_media_id is None:
        return None
    return Decision("add_sighting", "url", target=known_media_id)


def by_content(media_id: str, already_recorded: bool, similar: list[Similar]) -> Decision:
    """``similar``: the index's near-duplicates of the new media, each confirmed by the matcher
    (:func:`deepwatch.media.similar.find_similar`)."""
    if already_recorded:
        return Decision("add_sighting", "exact", target=media_id)
    duplicates = [
        s
        for s in similar
        if s.match.relation == "duplicate" and s.record.verdict in REUSABLE_VERDICTS and s.record.media_id != media_id
    ]
    if duplicates:
        best = min(duplicates, key=_closeness)
        # A near-duplicate of a near-duplicate points at the scored original, not along a chain.
        return Decision("reuse", "near", target=best.record.duplicate_of or best.record.media_id)
    variants = [s for s in similar if s.match.relation == "variant" and s.record.media_id != media_id]
    if variants:
        best = min(variants, key=_closeness)
        return Decision("score", "none", variant_of=best.record.duplicate_of or best.record.media_id)
    return Decision("score", "none")


def _closeness(similar: Similar) -> tuple[float, float, str]:
    # Most frames matched first, then the smaller distance; the id breaks ties so that every
    # worker (and every retry) picks the same original.
    return (-similar.match.matched_fraction, similar.match.distance, similar.record.media_id)


def sighting_of(event: UrlDiscovered, applied: dict[str, EventPosition] | None = None) -> Sighting:
    """The sighting an event stands for; seen at its discovery time, so a replayed event carries the
    same times (and the merge keeps the earliest first_seen and the latest last_seen). ``applied``: the
    event's position, per partition (``Sighting.applied``).

    Assembled, not validated again: every field comes from the validated event with the same type (a
    sighting's URLs, source and platform are an event's), one time makes the range, and the positions
    are validated ``EventPosition`` parts under Kafka's own partition names."""
    values = dict(url=event.url, canonical_url=event.canonical_url, source=event.source, platform=event.platform,
                  first_seen=event.discovered_at, last_seen=event.discovered_at, hints=event.hints)
    if applied is not None:
        values["applied"] = applied
    return Sighting.assembled(**values)


def near_duplicate_record(new: MediaRecord, original: MediaRecord) -> MediaRecord:
    """``new`` (fingerprinted, not scored) as a near-duplicate of the scored ``original``: its verdict,
    score, detector scores and the ensemble settings behind them are the original's; its identity,
    sightings and objects its own."""
    return MediaRecord.model_validate(
        {
            **new.model_dump(),
            "dedup": "near",
            "duplicate_of": original.duplicate_of or original.media_id,
            "detectors": {name: score.model_dump() for name, score in original.detectors.items()},
            "score": original.score,
            "verdict": original.verdict,
            "ensemble": None if original.ensemble is None else original.ensemble.model_dump(),
        }
    )
