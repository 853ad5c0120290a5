"""The stream's dedup decisions (stream.dedup): pure functions, tested on hand-built records and matches."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from deepwatch.contracts import DetectorScore, Fingerprints, MediaRecord, UrlDiscovered
from deepwatch.media.matching import Match
from deepwatch.media.similar import Candidate, Similar
from stream import dedup

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def mid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def record(name: str, *, verdict: str | None = "real", duplicate_of: str | None = None) -> MediaRecord:
    media_id = mid(name)
    scored = verdict in ("fake", "real", "uncertain")
    return MediaRecord(
        media_id=media_id,
        kind="video",
        fingerprints=Fingerprints(sha256=media_id),
        first_seen=T0,
        last_seen=T0,
        dedup="near" if duplicate_of else "none",
        duplicate_of=duplicate_of,
        verdict=verdict,
        error="fetch failed" if verdict == "error" else None,
        score=0.2 if scored else None,
        detectors={"meso4_df": DetectorScore(p_fake=0.2, model_version="meso4-df-2018")} if scored else {},
    )


def similar(rec: MediaRecord, relation: str, fraction: float = 0.9, distance: float = 8.0) -> Similar:
    return Similar(
        Candidate(rec.media_id, "pdq", int(distance), "frame"),
        rec,
        Match(relation=relation, distance=distance, matched_fraction=fraction),
    )


def test_a_known_url_only_adds_a_sighting():
    assert dedup.by_url(None) is None
    assert dedup.by_url(mid("a")) == dedup.Decision("add_sighting", "url", target=mid("a"))


def test_the_same_bytes_only_add_a_sighting_whatever_else_is_similar():
    decision = dedup.by_content(mid("a"), True, [similar(record("b"), "duplicate")])
    assert decision == dedup.Decision("add_sighting", "exact", target=mid("a"))


def test_new_media_with_nothing_similar_is_scored():
    assert dedup.by_content(mid("new"), False, []) == dedup.Decision("score", "none")
    assert dedup.by_content(mid("new"), False, [similar(record("b"), "different")]) == dedup.Decision("score", "none")


def test_a_near_duplicate_reuses_the_closest_scored_original():
    far, close = record("far"), record("close")
    decision = dedup.by_content(
        mid("new"), False, [similar(far, "duplicate", 0.6), similar(close, "duplicate", 0.95)]
    )
    assert decision == dedup.Decision("reuse", "near", target=close.media_id)


def test_ties_between_originals_are_broken_the_same_way_in_any_order():
    a, b = record("a"), record("b")
    one = dedup.by_content(mid("new"), False, [similar(a, "duplicate"), similar(b, "duplicate")])
    two = dedup.by_content(mid("new"), False, [similar(b, "duplicate"), similar(a, "duplicate")])
    assert one == two == dedup.Decision("reuse", "near", target=min(a.media_id, b.media_id))


def test_a_near_duplicate_of_a_near_duplicate_points_at_the_scored_original():
    original = record("original")
    copy = record("copy", duplicate_of=original.media_id)
    decision = dedup.by_content(mid("new"), False, [similar(copy, "duplicate")])
    assert decision.target == original.media_id


@pytest.mark.parametrize("verdict", [None, "error"])
def test_an_unscored_or_failed_original_is_no_verdict_to_inherit(verdict):
    decision = dedup.by_content(mid("new"), False, [similar(record("b", verdict=verdict), "duplicate")])
    assert decision == dedup.Decision("score", "none")


def test_a_variant_is_scored_as_new_media_and_points_at_its_original():
    original = record("original")
    decision = dedup.by_content(mid("swap"), False, [similar(original, "variant")])
    assert decision == dedup.Decision("score", "none", variant_of=original.media_id)


def test_a_duplicate_wins_over_a_variant():
    dup, var = record("dup"), record("var")
    decision = dedup.by_content(mid("new"), False, [similar(var, "variant", 0.99), similar(dup, "duplicate", 0.6)])
    assert decision == dedup.Decision("reuse", "near", target=dup.media_id)


def test_a_near_duplicate_record_takes_the_verdict_and_scores_and_keeps_its_identity():
    original = record("original", verdict="fake")
    new = record("new", verdict=None)
    near = dedup.near_duplicate_record(new, original)
    assert (near.media_id, near.fingerprints.sha256) == (new.media_id, new.media_id)
    assert (near.dedup, near.duplicate_of) == ("near", original.media_id)
    assert (near.verdict, near.score, near.detectors) == (original.verdict, original.score, original.detectors)


def test_a_sighting_is_the_same_however_often_its_event_is_replayed():
    event = UrlDiscovered(
        url="https://www.youtube.com/watch?v=abc&utm_source=x",
        canonical_url="https://www.youtube.com/watch?v=abc",
        source="crawl-1",
        platform="youtube",
        discovered_at=T0 + timedelta(minutes=5),
    )
    first, again = dedup.sighting_of(event), dedup.sighting_of(event)
    assert first == again
    assert (first.first_seen, first.last_seen, first.count) == (event.discovered_at, event.discovered_at, 1)
    assert first.canonical_url == event.canonical_url
