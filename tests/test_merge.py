"""storage.merge: fingerprint groups survive a merge whole (a lead list and the lists parallel to it)."""

from __future__ import annotations

from deepwatch.contracts import FINGERPRINT_PARALLEL, FaceScore, Fingerprints
from storage.merge import merge_records
from tests.index_support import media_id, record

H = "ab" * 32


def _with(n: int, **fields: object) -> Fingerprints:
    return Fingerprints(sha256=media_id(n), **fields)


def test_fingerprint_groups_are_kept_or_replaced_whole() -> None:
    frames = {"pdq": [H, H], "frame_times": [0.0, 1.0], "pdq_flip": [H, H], "phash": ["0f" * 8, "f0" * 8]}
    faces = {"pdq_faces": [H], "face_times": [1.0], "face_boxes": [[1, 2, 30, 40]]}
    old = record(1).model_copy(update={"fingerprints": _with(1, videohash="00" * 8, **frames, **faces)})
    bare = record(1)
    assert merge_records(old, bare).fingerprints == old.fingerprints  # nothing computed anew: nothing lost
    newer_frames = {"pdq": ["cd" * 32], "frame_times": [2.0]}
    new = record(1).model_copy(update={"fingerprints": _with(1, **newer_frames)})
    merged = merge_records(old, new).fingerprints
    assert merged.pdq == ["cd" * 32] and merged.frame_times == [2.0]
    assert merged.pdq_flip == [] and merged.phash == []  # the new frame group replaced the old one whole
    assert (merged.pdq_faces, merged.face_boxes) == (faces["pdq_faces"], faces["face_boxes"])
    assert merged.videohash == "00" * 8
    # every field of the contract belongs to a group the merge knows (a new field must be added there)
    known = {"sha256", "videohash", *FINGERPRINT_PARALLEL, *FINGERPRINT_PARALLEL.values()}
    assert set(Fingerprints.model_fields) == known


def test_face_scores_belong_to_one_scoring() -> None:
    def faces(*ts: float) -> list[FaceScore]:
        return [FaceScore(t=t, frame=i, box=[0, 0, 8, 8], scores={"m": 0.5}, score=0.5) for i, t in enumerate(ts)]

    old = record(1, verdict="fake", score=0.9, face_scores=faces(0.0, 1.0, 2.0))
    assert merge_records(old, record(1)).face_scores == old.face_scores  # a write without a scoring keeps them
    failed = record(1, verdict="error", error="detector down")
    assert merge_records(old, failed).face_scores == old.face_scores
    assert merge_records(old, record(1, verdict="real", score=0.1, face_scores=faces(5.0))).face_scores == faces(5.0)
    assert merge_records(old, record(1, verdict="no_face")).face_scores == []  # no faces this time is news too
