"""Face crops in a dataset export (``ExportRequest.faces``, ``deepwatch export --faces``, ``POST /v1/exports``).

A clip of a real test face moving across a background is scored in process with the real MesoNet weights;
its record (the real ``face_scores``, aligned by landmarks) and its bytes go to a SQLite index and a local
object store, beside a record with the same faces whose stored bytes are not a video, and an image with no
face. Each exported PNG is checked against the square cut here from the frame at the face's time, decoded
with PyAV on its own and turned upright with OpenCV (not through the code under test).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import FaceScore, Fingerprints, MediaRecord, StoredObjects
from deepwatch.media.encode import write_video
from deepwatch.settings import Settings, load_settings
from serve.detectors.base import Detector
from serve.face_crops import cropper
from serve.scoring import score_file
from storage.export import ExportError, ExportProgress, ExportRequest, run_export
from storage.index import open_index
from storage.objects import open_object_store
from tests.detector_support import face_image, face_scene, frame_at, mesonet, upright_cut  # noqa: F401 (fixture)
from tests.index_support import T0
from tests.media_support import image_bytes, pattern

KEY = "exports-key-" + "e" * 16


@dataclass
class Seeded:
    settings: Settings
    clip: Path
    clip_id: str
    faces: list[FaceScore]
    broken_id: str  # a record with the clip's faces whose stored bytes are not a video
    image_id: str  # an image with no scored face


def _record(media_id: str, kind: str, key: str, faces: list[FaceScore]) -> MediaRecord:
    return MediaRecord(media_id=media_id, kind=kind, fingerprints=Fingerprints(sha256=media_id), first_seen=T0,
                       last_seen=T0, face_scores=faces, verdict="fake", score=0.9, objects=StoredObjects(media=key))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, mesonet: dict[str, Detector]) -> Seeded:  # noqa: F811
    root = tmp_path_factory.mktemp("export-faces")
    settings = load_settings(data_dir=root / "data", models_dir=models_dir, api_keys=[KEY],
                             detectors=["meso4_df", "meso4_f2f"], score_frames_per_video=6, score_align_faces=True)
    clip = root / "clip.mp4"
    face = face_image(models_dir)
    write_video(clip, [face_scene(face, size=(480, 360), at=(40 + 6 * i, 60), side=200) for i in range(40)], crf=18)
    result = score_file(clip, settings, [mesonet["meso4_df"], mesonet["meso4_f2f"]])
    faces = list(result.face_scores)
    assert len(faces) >= 3 and all(f.aligned is not None for f in faces)

    store = open_object_store(settings)
    clip_id = hashlib.sha256(clip.read_bytes()).hexdigest()
    store.put(f"flagged/{clip_id}.mp4", clip, content_type="video/mp4")
    broken = b"\x00\x00\x00\x18ftypmp42" + b"not a video at all " * 50
    broken_id = hashlib.sha256(broken).hexdigest()
    store.put(f"flagged/{broken_id}.mp4", broken)
    picture = image_bytes("JPEG", pattern(64, 48, shift=5), quality=90)
    image_id = hashlib.sha256(picture).hexdigest()
    store.put(f"flagged/{image_id}.jpg", picture)
    index = open_index(settings)
    index.upsert_many([
        _record(clip_id, "video", f"flagged/{clip_id}.mp4", faces),
        _record(broken_id, "video", f"flagged/{broken_id}.mp4", faces),
        _record(image_id, "image", f"flagged/{image_id}.jpg", []),
    ])
    index.close()
    return Seeded(settings, clip, clip_id, faces, broken_id, image_id)


def assert_scored_crop(out: Path, row: dict, clip: Path) -> None:
    """The PNG a face row names holds the square cut from the clip's frame at the face's time."""
    with Image.open(out / row["file_name"]) as image:
        assert image.format == "PNG"
        got = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert (row["width"], row["height"]) == (got.shape[1], got.shape[0])
    frame = frame_at(clip, row["t"])
    want = upright_cut(frame, row["aligned"])
    assert abs(got.shape[0] - want.shape[0]) <= 1 and abs(got.shape[1] - want.shape[1]) <= 1
    want = np.asarray(Image.fromarray(want).resize(got.shape[1::-1], Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(got - want).mean() < 3, row["face"]  # lossless: only the two warps' rounding differs
    elsewhere = np.asarray(frame[-got.shape[0] :, -got.shape[1] :], dtype=np.float32)
    assert np.abs(got - elsewhere).mean() > 20  # a crop of the wrong place would not pass


def test_an_images_faces_are_cut_from_the_image(
    tmp_path: Path, models_dir: Path, mesonet: dict[str, Detector]  # noqa: F811
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", models_dir=models_dir, detectors=["meso4_df"],
                             score_align_faces=True)
    picture = tmp_path / "scene.png"
    Image.fromarray(face_scene(face_image(models_dir), size=(480, 360), at=(120, 70), side=210)).save(picture)
    result = score_file(picture, settings, [mesonet["meso4_df"]])
    assert len(result.face_scores) == 1 and result.face_scores[0].aligned is not None
    media_id = hashlib.sha256(picture.read_bytes()).hexdigest()
    open_object_store(settings).put(f"flagged/{media_id}.png", picture, content_type="image/png")
    index = open_index(settings)
    index.upsert_many([_record(media_id, "image", f"flagged/{media_id}.png", list(result.face_scores))])
    index.close()

    out = tmp_path / "out"
    summary = run_export(settings, ExportRequest(out=str(out), faces=True), crop_faces=cropper(settings))
    assert summary.faces is not None and (summary.faces.crops, summary.faces.errors) == (1, [])
    [row] = pq.read_table(out / "faces.parquet").to_pylist()
    with Image.open(out / row["file_name"]) as image:
        got = np.asarray(image.convert("RGB"), dtype=np.float32)
    with Image.open(picture) as image:  # the picture read here on its own, not through the code under test
        want = upright_cut(np.asarray(image.convert("RGB")), row["aligned"])
    assert abs(got.shape[0] - want.shape[0]) <= 1
    want = np.asarray(Image.fromarray(want).resize(got.shape[1::-1], Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(got - want).mean() < 3


class CountingCropper:
    """The real cropper, counting the media it decodes (a resumed export should decode none)."""

    def __init__(self, settings: Settings) -> None:
        self.crop = cropper(settings)
        self.media: list[Path] = []

    def __call__(self, media, faces, workdir):  # type: ignore[no-untyped-def]
        self.media.append(media)
        return self.crop(media, faces, workdir)


def test_each_scored_face_is_exported_as_the_pixels_scored(seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "out"
    request = ExportRequest(out=str(out), faces=True)
    crop = CountingCropper(seeded.settings)
    events: list[ExportProgress] = []
    summary = run_export(seeded.settings, request, crop_faces=crop, progress=events.append)

    assert summary.items == 3  # the media of all three, the undecodable one included
    cutting = [(e.done, e.total, e.bytes) for e in events if e.action == "faces"]
    assert cutting == [(1, 2, summary.bytes), (2, 2, summary.bytes)]  # the two media with faces
    faces = summary.faces
    assert faces is not None
    assert (faces.crops, faces.written, faces.kept, faces.left_out) == (len(seeded.faces), len(seeded.faces), 0, 0)
    assert [e.media_id for e in faces.errors] == [seeded.broken_id]
    assert len(crop.media) == 2  # the clip and the broken one; the image has no face to decode for

    media_rows = {r["media_id"]: r for r in pq.read_table(out / "metadata.parquet").to_pylist()}
    rows = pq.read_table(out / "faces.parquet").to_pylist()
    assert [r["face"] for r in rows] == list(range(len(seeded.faces)))
    split = media_rows[seeded.clip_id]["split"]
    for row, scored in zip(rows, seeded.faces, strict=True):
        assert row["media_id"] == seeded.clip_id
        assert (row["split"], row["cluster"], row["label"]) == (split, media_rows[seeded.clip_id]["cluster"], "fake")
        assert row["file_name"] == f"faces/{split}/{seeded.clip_id}-{row['face']:03d}.png"
        assert row["p_fake_meso4_df"] == scored.scores["meso4_df"]
        assert row["p_fake_meso4_f2f"] == scored.scores["meso4_f2f"]
        assert (row["t"], row["frame"], row["box"], row["aligned"]) == (scored.t, scored.frame, scored.box, scored.aligned)

        assert_scored_crop(out, row, seeded.clip)

    local = pq.read_table(out / "faces" / split / "metadata.parquet").to_pylist()
    assert [r["file_name"] for r in local] == [r["file_name"].rpartition("/")[2] for r in rows if r["split"] == split]
    with open(out / "faces.csv") as text:
        assert text.readline().startswith("file_name,media_id,split,cluster,label,face,t,frame,box,aligned")
    assert len((out / "faces.jsonl").read_text().splitlines()) == len(rows)
    card = (out / "README.md").read_text()
    assert f"- face crops: {len(rows)}" in card and "faces/<split>/<media_id>-<nnn>.png" in card
    for name in ("faces.parquet", "faces.csv", "faces.jsonl", f"faces/{split}/metadata.parquet"):
        assert name in summary.files


def test_a_second_run_keeps_intact_faces_without_decoding(seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "out"
    request = ExportRequest(out=str(out), faces=True)
    run_export(seeded.settings, request, crop_faces=cropper(seeded.settings))
    written = sorted(out.glob("faces/*/*.png"))
    assert len(written) == len(seeded.faces)

    again = CountingCropper(seeded.settings)
    summary = run_export(seeded.settings, request, crop_faces=again)
    assert summary.faces is not None
    assert (summary.faces.kept, summary.faces.written) == (len(seeded.faces), 0)
    assert again.media and all(seeded.clip_id not in str(m) for m in again.media)  # only the broken one is tried

    written[0].write_bytes(written[0].read_bytes()[:-10])  # damaged: that media's faces are cut again
    third = CountingCropper(seeded.settings)
    summary = run_export(seeded.settings, request, crop_faces=third)
    assert summary.faces is not None
    assert (summary.faces.written, summary.faces.kept) == (len(seeded.faces), 0)
    with Image.open(written[0]) as image:
        image.load()  # whole again


def test_faces_of_frames_no_longer_decoded_are_left_out(seeded: Seeded, tmp_path: Path) -> None:
    """With another frame count than at scoring, a face's position names another frame: not cut from it."""
    settings = seeded.settings.model_copy(update={"score_frames_per_video": 5})
    out = tmp_path / "out"
    summary = run_export(settings, ExportRequest(out=str(out), faces=True), crop_faces=cropper(settings))
    assert summary.faces is not None
    assert summary.faces.crops + summary.faces.left_out == len(seeded.faces)
    assert summary.faces.left_out >= 1
    rows = pq.read_table(out / "faces.parquet").to_pylist()
    assert len(rows) == summary.faces.crops
    for row in rows:  # those cut were cut from their own frame (5 and 6 frames over 40 share a few times)
        assert_scored_crop(out, row, seeded.clip)
    again = run_export(settings, ExportRequest(out=str(out), faces=True), crop_faces=cropper(settings))
    assert again.faces is not None  # a resumed run keeps what was cut and counts what was not
    assert (again.faces.kept, again.faces.written, again.faces.left_out) == (summary.faces.crops, 0,
                                                                              summary.faces.left_out)


def test_faces_need_a_cropper(seeded: Seeded, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="face crops"):
        run_export(seeded.settings, ExportRequest(out=str(tmp_path / "out"), faces=True))
    assert not (tmp_path / "out").exists()


def test_cli_export_faces(seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {"DEEPWATCH_MODELS_DIR": str(seeded.settings.models_dir), "DEEPWATCH_SCORE_FRAMES_PER_VIDEO": "6",
           "DEEPWATCH_SCORE_ALIGN_FACES": "true"}
    result = CliRunner().invoke(app, ["export", "--out", str(out), "--faces", "--json", "--data-dir",
                                      str(seeded.settings.data_dir)], env=env)
    assert result.exit_code == 1, result.output  # the undecodable media's faces are an error
    summary = json.loads(result.stdout)
    assert summary["items"] == 3 and summary["faces"]["crops"] == len(seeded.faces)
    assert [e["media_id"] for e in summary["faces"]["errors"]] == [seeded.broken_id]
    assert len(list(out.glob("faces/*/*.png"))) == len(seeded.faces)

    plain = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "plain"), "--json", "--data-dir",
                                     str(seeded.settings.data_dir)], env=env)
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["faces"] is None and not (tmp_path / "plain" / "faces").exists()


def test_api_export_faces(seeded: Seeded) -> None:
    from tests.api_support import Api

    api = Api(seeded.settings)
    api.use()
    r = api.post("/v1/exports", KEY, {"out": "store:with-faces", "faces": True})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (job := api.get(r.headers["location"], KEY).json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["status"] == "done", job
    assert job["summary"]["faces"]["crops"] == len(seeded.faces)
    assert [e["media_id"] for e in job["summary"]["faces"]["errors"]] == [seeded.broken_id]
    store = open_object_store(seeded.settings)
    pngs = [k for k in store.list_keys("exports/with-faces/faces/") if k.endswith(".png")]
    assert len(pngs) == len(seeded.faces)


def test_exported_faces_score_as_they_were_scored(seeded: Seeded, tmp_path: Path) -> None:
    """`detectors evaluate faces.jsonl --aligned` feeds each PNG whole to the detectors: being the pixels they
    read, each scores what its record says."""
    out = tmp_path / "out"
    run_export(seeded.settings, ExportRequest(out=str(out), faces=True), crop_faces=cropper(seeded.settings))
    result = CliRunner().invoke(app, ["detectors", "evaluate", str(out / "faces.jsonl"), "--aligned",
                                      "--detectors", "meso4_df,meso4_f2f", "--json", "--data-dir", str(tmp_path)],
                                env={"DEEPWATCH_MODELS_DIR": str(seeded.settings.models_dir)})
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["items"] == len(seeded.faces) and document["errors"] == 0
    by_file = {r["file"]: r for r in document["per_item"]}
    gaps = []
    for row in pq.read_table(out / "faces.parquet").to_pylist():
        scored = by_file[row["file_name"]]
        assert scored["fake"] is True
        gaps.append(max(abs(scored["p_fake"][n] - row[f"p_fake_{n}"]) for n in ("meso4_df", "meso4_f2f")))
    # The alignment is recorded to 1e-6 px and OpenCV's warp snaps its sample positions to 1/32 px, so now and
    # then a position crosses a snap and a few values move by one level: 14 of 196,608 in one face here, which
    # moved MesoNet by 5e-4. The rest are the same pixels, and score the same but for float rounding.
    assert max(gaps) < 2e-3, gaps
    assert sum(gap < 1e-5 for gap in gaps) >= len(gaps) / 2, gaps

    unaligned = CliRunner().invoke(app, ["detectors", "evaluate", str(out / "faces.jsonl"), "--detectors", "meso4_df",
                                         "--json", "--data-dir", str(tmp_path)],
                                   env={"DEEPWATCH_MODELS_DIR": str(seeded.settings.models_dir)})
    assert unaligned.exit_code == 0 and "without --aligned" in unaligned.stderr  # a hint, not a refusal

