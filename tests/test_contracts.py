"""Contracts reject bad input with an error naming the field, and round-trip good input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from deepwatch.contracts import (
    MAX_FACE_SCORES,
    ContractError,
    DeadLetter,
    EventPosition,
    MediaRecord,
    ScoredMedia,
    Sighting,
    UrlDiscovered,
    parse,
)

SHA = "ab" * 32
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def url_event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "schema_version": 1,
        "url": "https://youtu.be/dQw4w9WgXcQ?si=abc",
        "canonical_url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "source": "yt-channel",
        "platform": "youtube",
        "discovered_at": T0.isoformat(),
        "hints": {"title": "a clip", "uploader": "someone"},
        "trace_id": "t1",
    }
    event.update(changes)
    return event


FACE: dict[str, object] = {"t": 1.0, "frame": 0, "box": [10, 20, 64, 64], "scores": {"meso4_df": 0.8}, "score": 0.8}


def record(**changes: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "media_id": SHA,
        "kind": "video",
        "fingerprints": {"sha256": SHA, "videohash": "0f" * 8, "pdq": ["1" * 64]},
        "sightings": [
            {
                "url": "https://x.com/a/status/1",
                "canonical_url": "https://x.com/a/status/1",
                "source": "feed",
                "platform": "x",
                "first_seen": T0.isoformat(),
                "last_seen": (T0 + timedelta(hours=1)).isoformat(),
                "count": 3,
            }
        ],
        "first_seen": T0.isoformat(),
        "last_seen": (T0 + timedelta(hours=1)).isoformat(),
        "detectors": {"meso4_df": {"p_fake": 0.9, "model_version": "meso4-df@2144d56", "frames": 32}},
        "score": 0.9,
        "verdict": "fake",
    }
    rec.update(changes)
    return rec


def test_url_discovered_round_trips_and_keys_by_canonical_url() -> None:
    event = parse(UrlDiscovered, json.dumps(url_event()))
    assert event.key() == b"https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert parse(UrlDiscovered, event.to_json()) == event


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"url": "ftp://example.com/a.mp4"}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"canonical_url": 7}, "canonical_url"),
        ({"source": "Has Spaces"}, "source"),
        ({"discovered_at": "2026-11-01T12:00:00"}, "discovered_at"),  # naive time: ambiguous
        ({"hints": {"title": "x", "likes": 3}}, "hints.likes"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_url_discovered_names_the_bad_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ContractError) as info:
        parse(UrlDiscovered, url_event(**changes))
    assert field in info.value.fields
    assert field in str(info.value)


def test_missing_required_field_is_named() -> None:
    event = url_event()
    del event["platform"]
    with pytest.raises(ContractError, match="platform"):
        parse(UrlDiscovered, event)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_non_object_input_is_a_contract_error(raw: bytes) -> None:
    with pytest.raises(ContractError) as info:
        parse(UrlDiscovered, raw)
    assert info.value.fields == ["<root>"]


def test_media_record_round_trips() -> None:
    rec = parse(MediaRecord, record())
    assert rec.detectors["meso4_df"].p_fake == 0.9
    assert rec.face_scores == []  # records from before per-face scores still load
    assert parse(MediaRecord, rec.to_json()) == rec
    with_faces = parse(MediaRecord, record(face_scores=[FACE, {**FACE, "t": 2.0, "frame": 1, "score": None}]))
    assert with_faces.face_scores[1].score is None and with_faces.face_scores[0].box == [10, 20, 64, 64]
    assert parse(MediaRecord, with_faces.to_json()) == with_faces


def test_copied_with_is_model_copy() -> None:
    """The hit path's cheap copy makes what pydantic's ``model_copy(update=...)`` makes, and leaves the
    original alone."""
    rec = parse(MediaRecord, record())
    later = T0 + timedelta(hours=5)
    sighting = rec.sightings[0]
    cheap = sighting.copied_with(count=4, last_seen=later)
    assert cheap == sighting.model_copy(update={"count": 4, "last_seen": later})
    assert cheap.model_fields_set == sighting.model_copy(update={"count": 4, "last_seen": later}).model_fields_set
    assert sighting.count == 3 and cheap.count == 4
    moved = rec.copied_with(sightings=[cheap], last_seen=later)
    assert moved.model_dump_json(exclude_unset=True) == rec.model_copy(
        update={"sightings": [cheap], "last_seen": later}).model_dump_json(exclude_unset=True)
    assert parse(MediaRecord, moved.to_json()) == moved and rec.last_seen == T0 + timedelta(hours=1)


def test_assembled_is_the_validated_part() -> None:
    """Assembling valid values makes what validating them makes: the same fields, defaults filled in (a
    default factory called for each part), and the same fields set (which ``exclude_unset`` dumps)."""
    values = {"url": "https://x.example/a?s=1", "canonical_url": "https://x.example/a", "source": "crawler",
              "platform": "web", "first_seen": T0, "last_seen": T0, "hints": None}
    assembled, validated = Sighting.assembled(**values), Sighting(**values)
    assert assembled == validated and assembled.count == 1 and assembled.applied == {}
    assert assembled.model_fields_set == validated.model_fields_set
    assert assembled.model_dump_json(exclude_unset=True) == validated.model_dump_json(exclude_unset=True)
    assert Sighting.assembled(**values).applied is not assembled.applied
    mark = {"deepwatch.urls:1": EventPosition(offset=7, timestamp_ms=9)}
    assert Sighting.assembled(**values, applied=mark) == Sighting(**values, applied=mark)
    with pytest.raises(TypeError, match="'url'"):
        Sighting.assembled(**{k: v for k, v in values.items() if k != "url"})
    with pytest.raises(TypeError, match="colour"):
        Sighting.assembled(**values, colour="red")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"media_id": "XYZ"}, "media_id"),
        ({"kind": "audio"}, "kind"),
        ({"score": 1.5}, "score"),
        ({"verdict": "probably"}, "verdict"),
        ({"dedup": "fuzzy"}, "dedup"),
        ({"detectors": {"m": {"p_fake": -0.1, "model_version": "v"}}}, "detectors.m.p_fake"),
        ({"timings": {"fetch": -1}}, "timings.fetch"),
        ({"review": {"label": "fake", "reviewer": "", "note": "x"}}, "review.reviewer"),
        ({"face_scores": [{**FACE, "scores": {"m": 1.2}}]}, "face_scores.0.scores.m"),
        ({"face_scores": [{**FACE, "box": [1, 2, 3]}]}, "face_scores.0.box"),
        ({"face_scores": [{**FACE, "t": -1}]}, "face_scores.0.t"),
        ({"face_scores": [{**FACE, "crop": "..."}]}, "face_scores.0.crop"),
        ({"face_scores": [FACE] * (MAX_FACE_SCORES + 1)}, "face_scores"),
    ],
)
def test_media_record_names_the_bad_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ContractError) as info:
        parse(MediaRecord, record(**changes))
    assert field in info.value.fields


def test_nested_sighting_errors_carry_their_path() -> None:
    rec = record()
    rec["sightings"][0]["count"] = 0  # type: ignore[index]
    with pytest.raises(ContractError) as info:
        parse(MediaRecord, rec)
    assert "sightings.0.count" in info.value.fields


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fingerprints": {"sha256": "cd" * 32}}, "must equal media_id"),
        ({"dedup": "near"}, "needs duplicate_of"),
        ({"verdict": "error"}, "needs an error message"),
        ({"last_seen": (T0 - timedelta(days=1)).isoformat()}, "before first_seen"),
    ],
)
def test_media_record_rejects_inconsistent_documents(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse(MediaRecord, record(**changes))


def test_one_sighting_per_canonical_url() -> None:
    rec = record()
    rec["sightings"] = rec["sightings"] * 2  # type: ignore[operator]
    with pytest.raises(ContractError, match="one entry per canonical_url"):
        parse(MediaRecord, rec)


def test_scored_media_and_dead_letter_round_trip() -> None:
    scored = ScoredMedia(
        media_id=SHA, trace_id="t", canonical_url="https://x.com/a/status/1", dedup="none", verdict="real", score=0.1
    )
    assert parse(ScoredMedia, scored.to_json()) == scored
    letter = DeadLetter(payload="{bad", stage="validate", error_type="ContractError", message="url: bad")
    assert parse(DeadLetter, letter.to_json()) == letter
    with pytest.raises(ContractError) as info:
        parse(DeadLetter, {**json.loads(letter.to_json()), "attempts": 0})
    assert info.value.fields == ["attempts"]
