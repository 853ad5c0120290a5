"""`deepwatch similar FILE` on a real index: real clips (H.264 from the project's encoder), fingerprinted, recorded,
then looked for by files that were never recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import MediaInfo, MediaRecord
from deepwatch.media.fingerprint import MediaFingerprint
from deepwatch.media.similar import QueryHash, nearest, query_hashes
from deepwatch.settings import load_settings
from storage.index import open_index
from tests.fingerprint_support import Clips, clips, face_images, mirrored, scene, with_face  # noqa: F401
from tests.index_support import T0

runner = CliRunner()


def recorded(fp: MediaFingerprint) -> MediaRecord:
    return MediaRecord(media_id=fp.sha256, kind=fp.kind, fingerprints=fp.to_contract(), first_seen=T0, last_seen=T0,
                       media=MediaInfo(duration=fp.duration, width=fp.width, height=fp.height))


@pytest.fixture
def data_dir(tmp_path: Path, clips: Clips) -> Path:  # noqa: F811
    """An index holding two distinct clips."""
    index = open_index(load_settings(data_dir=tmp_path))
    for name, seed in (("plain", 1), ("other-2", 2)):
        index.upsert(recorded(clips.fingerprint(clips.get(name, lambda seed=seed: scene(seed)))))
    index.close()
    return tmp_path


def similar(path: Path, data_dir: Path, *extra: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["similar", str(path), "--data-dir", str(data_dir), *extra, "--json"])
    return result.exit_code, json.loads(result.stdout)


def by_record(document: dict) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for item in document["items"]:
        grouped.setdefault(item["media_id"], []).append(item)
    return grouped


def test_an_unrecorded_copy_finds_its_original_and_is_called_a_duplicate(data_dir: Path, clips: Clips) -> None:  # noqa: F811
    plain = clips.fingerprint(clips.get("plain", lambda: scene(1)))
    other = clips.fingerprint(clips.get("other-2", lambda: scene(2)))
    copy = clips.get("lower-bitrate", lambda: scene(1), bit_rate=120_000)
    code, doc = similar(copy, data_dir)
    assert code == 0, doc
    assert doc["recorded"] is False and doc["file"] == str(copy)
    found = by_record(doc)
    assert plain.sha256 in found and other.sha256 not in found
    pdq = next(i for i in found[plain.sha256] if i["kind"] == "pdq")
    assert pdq["via"] == "frame" and pdq["distance"] <= doc["radius"]["pdq"]
    assert {i["relation"] for i in found[plain.sha256]} == {"duplicate"}
    assert pdq["matched_fraction"] >= 0.5 and pdq["record"]["media_id"] == plain.sha256
    # radius 0 finds only hashes equal to the copy's: no re-encoded frame's PDQ is, while the videohash (64 bits for
    # the whole video, coarse) of a re-encode can be
    code, doc = similar(copy, data_dir, "--radius", "pdq=0", "--radius", "videohash=0")
    assert code == 0
    assert [i for i in doc["items"] if i["kind"] == "pdq"] == []
    assert all(i["kind"] == "videohash" and i["distance"] == 0 for i in doc["items"])


def test_a_flipped_copy_is_found_by_the_mirror_hashes(data_dir: Path, clips: Clips) -> None:  # noqa: F811
    plain = clips.fingerprint(clips.get("plain", lambda: scene(1)))
    flipped = clips.get("mirrored", lambda: mirrored(scene(1)))
    code, doc = similar(flipped, data_dir)
    assert code == 0, doc
    found = by_record(doc)
    pdq = next(i for i in found[plain.sha256] if i["kind"] == "pdq")
    assert pdq["via"] == "mirror" and pdq["relation"] == "duplicate"


def test_a_recorded_file_uses_its_stored_fingerprints_and_leaves_itself_out(data_dir: Path, clips: Clips) -> None:  # noqa: F811
    path = clips.get("plain", lambda: scene(1))
    code, doc = similar(path, data_dir)
    assert code == 0, doc
    assert doc["recorded"] is True
    assert clips.fingerprint(path).sha256 not in by_record(doc)


def test_a_face_swap_is_a_variant(tmp_path: Path, clips: Clips) -> None:  # noqa: F811
    faces = face_images()
    real = clips.fingerprint(clips.get("face-0", lambda: with_face(scene(31), faces[0])))
    index = open_index(load_settings(data_dir=tmp_path))
    index.upsert(recorded(real))
    index.close()
    swapped = clips.get("face-1", lambda: with_face(scene(31), faces[1]))
    code, doc = similar(swapped, tmp_path)
    assert code == 0, doc
    assert {i["relation"] for i in by_record(doc)[real.sha256]} == {"variant"}


def test_a_file_that_is_not_media_is_refused_by_its_bytes(data_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    code, doc = similar(junk, data_dir)
    assert code == 1 and doc["kind"] == "Unsupported"  # no media format, whatever its name says
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))  # an MP4's first box, then nothing
    code, doc = similar(broken, data_dir)
    assert code == 1 and doc["kind"] == "Corrupt"


def test_query_hashes_ask_each_variant_once_and_nearest_keeps_the_closest() -> None:
    from deepwatch.contracts import Fingerprints

    a, b, c = "0" * 64, "f" * 64, "1" * 64
    fp = Fingerprints(sha256="a" * 64, videohash="0" * 16, pdq=[a, a, b], pdq_flip=[c, c, c], pdq_crop=[a, b, b])
    asked = query_hashes(fp)
    assert [(q.kind, q.via, q.value) for q in asked] == [
        ("videohash", "video", "0" * 16), ("pdq", "frame", a), ("pdq", "frame", b), ("pdq", "mirror", c)
    ]
    frame, mirror = QueryHash("pdq", "frame", a), QueryHash("pdq", "mirror", c)
    hits = [(frame, "r1", 12), (mirror, "r1", 5), (frame, "r2", 7), (frame, "a" * 64, 0)]
    assert [(n.media_id, n.distance, n.via) for n in nearest(hits, exclude="a" * 64)] == [
        ("r1", 5, "mirror"), ("r2", 7, "frame")
    ]
