"""The documents one event produces (pure: the same inputs build the same documents, so a redelivered
event rebuilds what the first delivery wrote and the index's merge makes the rewrite a no-op)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from deepwatch.contracts import (
    DedupClass,
    EventPosition,
    MediaInfo,
    MediaRecord,
    Sighting,
    StoredObjects,
    UrlDiscovered,
    UrlFailure,
    scored_media_json,
)
from stream.dedup import sighting_of

if TYPE_CHECKING:
    from deepwatch.media.fingerprint import MediaFingerprint
    from storage.index import RecordHead
    from stream.scoring_client import ScoreAnswer



@dataclass(frozen=True)
class Position:
    """Where an event came from: its partition and offset, and the Kafka record's timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def partition_name(self) -> str:
        return f"{self.topic}:{self.partition}"


def sighting_at(event: UrlDiscovered, position: Position | None) -> Sighting:
    """The event's sighting, carrying its position so that a redelivery is recognised (``Sighting.applied``)."""
    if position is None:
        return sighting_of(event)
    if position.offset >= 0 and position.timestamp_ms >= 0:  # all a mark's rules: not checked again per event
        mark = EventPosition.assembled(offset=position.offset, timestamp_ms=position.timestamp_ms)
    else:
        mark = EventPosition(offset=position.offset, timestamp_ms=position.timestamp_ms)  # says what is wrong
    return sighting_of(event, {position.partition_name: mark})


def new_record(
    sighting: Sighting,
    fingerprint: MediaFingerprint,
    info: MediaInfo,
    *,
    variant_of: str | None = None,
    timings: dict[str, float] | None = None,
) -> MediaRecord:
    """A media item seen for the first time, fingerprinted and not (yet) scored."""
    return MediaRecord(
        media_id=fingerprint.sha256,
        kind=fingerprint.kind,
        fingerprints=fingerprint.to_contract(),
        sightings=[sighting],
        first_seen=sighting.first_seen,
        last_seen=sighting.last_seen,
        variant_of=variant_of,
        media=info,
        timings={k: round(v, 6) for k, v in (timings or {}).items()},
    )


def scored(record: MediaRecord, answer: ScoreAnswer, objects: StoredObjects) -> MediaRecord:
    timings = {**record.timings, **{f"score.{k}": round(v, 6) for k, v in answer.timings.items() if v >= 0}}
    return record.model_copy(
        update={
            "detectors": answer.detectors,
            "face_scores": answer.face_scores,
            "score": answer.score,
            "verdict": answer.verdict,
            "ensemble": answer.ensemble,
            "objects": objects,
            "timings": timings,
        }
    )


# A result as published on deepwatch.results: its Kafka key (the media id) and its JSON (ScoredMedia)
ResultMessage = tuple[bytes, bytes]


def result_of(
    head: RecordHead, event: UrlDiscovered, dedup: DedupClass | None = None, at: datetime | None = None
) -> ResultMessage:
    """What ``deepwatch.results`` hears about one event; ``dedup`` is how this event was resolved
    (a URL hit on a record that was itself a near-duplicate is still a "url" event), ``at`` when (now by default;
    the results of a batch published together share one time).

    Every value comes from a validated event or record, so the result is written, not validated again, and the
    record's scores are written as the index handed them (``RecordHead.scores``): the stream publishes one result
    per event (deepwatch.contracts.scored_media_json)."""
    value = scored_media_json(media_id=head.media_id, trace_id=event.trace_id, canonical_url=event.canonical_url,
                              dedup=dedup or head.dedup, record_scores=head.scores, at=at)
    return head.media_id.encode(), value


def url_failure(sighting: Sighting, stage: str, error: BaseException, attempts: int) -> UrlFailure:
    return UrlFailure(
        canonical_url=sighting.canonical_url,
        sighting=sighting,
        stage=stage,
        error_type=type(error).__name__,
        reason=(str(error) or type(error).__name__)[:10_000],
        attempts=attempts,
    )
