"""GET /v1/media/{id}/faces/{n}: each scored face cut out of the frame it was scored in.

A clip of a real test face moving across a background is scored in process with the real MesoNet weights;
its record (the real ``face_scores``) and its bytes under ``flagged/`` go to a SQLite index and a local
object store, and the API serves the crops. Each crop is checked against the same box cut from the frame
at the face's time, decoded here with PyAV on its own (not through the code under test), and for an aligned
face turned upright here with OpenCV.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepwatch.contracts import Fingerprints, MediaRecord, StoredObjects
from deepwatch.media.encode import write_video
from deepwatch.settings import load_settings
from serve.detectors.base import Detector
from serve.scoring import score_file
from storage.index import open_index
from storage.objects import open_object_store
from tests.detector_support import face_image, face_scene, frame_at, mesonet, upright_cut  # noqa: F401 (fixture)
from tests.index_support import T0

KEY = "crops-key-" + "c" * 16


def record_of(path: Path, key: str, result) -> MediaRecord:  # type: ignore[no-untyped-def]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return MediaRecord(media_id=sha, kind="video", fingerprints=Fingerprints(sha256=sha), first_seen=T0, last_seen=T0,
                       face_scores=result.face_scores, verdict=result.verdict, score=result.score,
                       objects=StoredObjects(media=key))


@pytest.mark.parametrize("align", [True, False])
def test_each_face_is_cut_from_its_frame(
    tmp_path: Path, models_dir: Path, mesonet: dict[str, Detector], align: bool  # noqa: F811
) -> None:
    """Each face as the detectors scored it: turned upright by its landmarks, or its box as it is."""
    settings = load_settings(data_dir=tmp_path / "data", models_dir=models_dir, api_keys=[KEY],
                             detectors=["meso4_df"], score_frames_per_video=6, score_align_faces=align)
    clip = tmp_path / "clip.mp4"
    face = face_image(models_dir)
    write_video(clip, [face_scene(face, size=(480, 360), at=(40 + 6 * i, 60), side=200) for i in range(40)], crf=18)
    result = score_file(clip, settings, [mesonet["meso4_df"]])
    assert len(result.face_scores) >= 3  # a face in most sampled frames
    assert all((face.aligned is not None) == align for face in result.face_scores)

    sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    store = open_object_store(settings)
    store.put(f"flagged/{sha}.mp4", clip, content_type="video/mp4")
    kept = record_of(clip, f"flagged/{sha}.mp4", result)
    gone = record_of(clip, None, result).model_copy(update={"media_id": "0" * 64,  # type: ignore[arg-type]
                                                             "fingerprints": Fingerprints(sha256="0" * 64)})
    index = open_index(settings)
    index.upsert_many([kept, gone])

    from serve.api import build_api

    with TestClient(build_api(settings)) as client:
        auth = {"X-API-Key": KEY}
        for n, scored in enumerate(result.face_scores):
            r = client.get(f"/v1/media/{sha}/faces/{n}", headers=auth)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/jpeg"
            got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.float32)
            x, y, w, h = scored.box
            frame = frame_at(clip, scored.t)
            cut = upright_cut(frame, scored.aligned) if scored.aligned else frame[y : y + h, x : x + w]
            want = np.asarray(Image.fromarray(cut).resize(got.shape[1::-1], Image.Resampling.LANCZOS), dtype=np.float32)
            assert np.abs(got - want).mean() < 6, n  # the same pixels, but for JPEG
            elsewhere = np.asarray(Image.fromarray(frame_at(clip, scored.t)[:h, -w:]).resize(got.shape[1::-1]),
                                   dtype=np.float32)
            assert np.abs(got - elsewhere).mean() > 20  # a crop of the wrong place would not pass

        assert client.get(f"/v1/media/{sha}/faces/{len(result.face_scores)}", headers=auth).status_code == 404
        missing = client.get(f"/v1/media/{'0' * 64}/faces/0", headers=auth)
        assert missing.status_code == 404 and "not kept" in missing.json()["detail"]
        assert client.get(f"/v1/media/{sha}/faces/-1", headers=auth).status_code == 422
        assert client.get(f"/v1/media/{sha}/faces/0").status_code == 401


@pytest.mark.parametrize("box", [(10, 20, 30, 40), (-5, -5, 20, 20), (90, 90, 50, 50), (200, 200, 10, 10)])
def test_crop_clips_to_the_frame(box: tuple[int, int, int, int]) -> None:
    from serve.face_crops import crop

    frame = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    x, y, w, h = box
    want = frame[max(y, 0) : max(min(y + h, 100), 0), max(x, 0) : max(min(x + w, 120), 0)]
    assert np.array_equal(crop(frame, box), want)
