"""Local scoring on the real MesoNet weights: aligned faces, faces in a picture, a video, and no face."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepwatch.contracts import DetectorScore
from deepwatch.media.encode import write_video
from deepwatch.media.errors import Corrupt
from deepwatch.media.landmarks import weight_file
from deepwatch.settings import load_settings
from serve.detectors.base import Detector
from serve.ensemble import EnsembleConfig, calibrate, ensemble_score
from serve.scoring import (
    MAX_ALIGNED_SIDE,
    Face,
    FaceCrops,
    Frame,
    aggregate,
    busy_seconds,
    crops_for,
    decode_media,
    face_scores,
    faces_while_decoding,
    find_faces,
    media_frames,
    read_ahead,
    representative_faces,
    resize,
    run_detector,
    sampling_interval,
    score_file,
    upright_face,
)
from tests.detector_support import FACES_DIR, face_image, face_scene
from tests.media_support import pattern


def test_an_aligned_face_is_scored_whole(models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path) -> None:
    path = models_dir / FACES_DIR / "df" / "df00204.jpg"
    result = score_file(path, load_settings(data_dir=tmp_path), list(mesonet.values()), aligned=True)
    assert result.media_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (result.kind, result.frames, result.faces) == ("image", 1, 1)
    crop = resize(face_image(models_dir, "df/df00204.jpg"), 256)[None]
    for name, detector in mesonet.items():
        assert result.detectors[name].p_fake == pytest.approx(float(detector.predict(crop)[0]), abs=1e-6)
        assert result.detectors[name].frames == 1
        assert result.detectors[name].model_version == detector.model_version()
    assert result.score == pytest.approx(ensemble_score({n: s.p_fake for n, s in result.detectors.items()}))
    expected = "fake" if result.score >= 0.7 else "real" if result.score <= 0.3 else "uncertain"  # type: ignore[operator]
    assert result.verdict == expected
    assert {"sha256", "decode", "faces", "ensemble", "total"} <= set(result.timings)
    assert all(f"detector.{n}" in result.timings for n in mesonet)


def test_a_face_in_a_picture_is_found_cropped_and_scored(models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(face_scene(face_image(models_dir))).save(path)
    detectors = [mesonet["meso4_df"], mesonet["mesoinception4_df"]]
    result = score_file(path, load_settings(data_dir=tmp_path), detectors)
    assert result.faces == 1, result
    assert set(result.detectors) == {"meso4_df", "mesoinception4_df"}
    assert result.verdict in ("fake", "real", "uncertain") and 0.0 <= result.score <= 1.0  # type: ignore[operator]
    # one face: its own scores are the detectors' media scores, and its ensemble is the media's
    (face,) = result.to_json()["face_scores"]
    assert (face["t"], face["frame"]) == (0.0, 0) and face["box"][2] == face["box"][3] > 0
    assert face["scores"] == {n: pytest.approx(s.p_fake, abs=1e-6) for n, s in result.detectors.items()}
    assert face["score"] == pytest.approx(result.score, abs=1e-5)


def test_the_crop_lands_on_the_pasted_face(models_dir: Path, tmp_path: Path) -> None:
    from serve.scoring import Frame, find_faces

    scene = face_scene(face_image(models_dir), at=(300, 150), side=200)
    (face,) = find_faces([Frame(0, 0.0, scene)], confidence=0.8, margin=0.2)
    x, y, w, h = face.box
    # the box centre is inside the pasted square's middle half, and the crop is square and about its size
    assert 350 <= x + w / 2 <= 450 and 200 <= y + h / 2 <= 300
    assert w == h and 120 <= w <= 320
    assert face.crop.shape == (h, w, 3)


def test_a_picture_without_a_face_is_no_face(mesonet: dict[str, Detector], tmp_path: Path) -> None:
    path = tmp_path / "pattern.png"
    Image.fromarray(pattern(320, 240)).save(path)
    result = score_file(path, load_settings(data_dir=tmp_path), list(mesonet.values()))
    assert (result.verdict, result.score, result.detectors, result.faces) == ("no_face", None, {}, 0)


def test_a_video_is_scored_on_evenly_spaced_frames(models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path) -> None:
    face = face_image(models_dir, "df/df00204.jpg")
    frames = [face_scene(face, size=(480, 360), at=(120 + 2 * i, 60), side=200) for i in range(30)]
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=10.0, gop=10)
    settings = load_settings(data_dir=tmp_path, score_frames_per_video=6)
    result = score_file(path, settings, [mesonet["meso4_f2f"]])
    assert (result.kind, result.frames) == ("video", 6)
    score = result.detectors["meso4_f2f"]
    assert 1 <= score.frames <= 6 and score.frames == result.faces
    assert result.score == pytest.approx(score.p_fake)  # one detector, identity calibration
    faces = result.face_scores
    assert len(faces) == result.faces and [f.frame for f in faces] == sorted(f.frame for f in faces)
    times = [f.t for f in faces]
    assert times == sorted(times) and len(set(times)) == len(times) and times[-1] <= 3.0
    # the media score is the per-face scores' mean over frames of each frame's worst face
    value, _ = aggregate([f.scores["meso4_f2f"] for f in faces], [f.frame for f in faces])
    assert value == pytest.approx(score.p_fake, abs=1e-5)
    assert all(f.score == pytest.approx(f.scores["meso4_f2f"], abs=1e-5) for f in faces)


@pytest.mark.parametrize("workers", [1, 3])
def test_faces_found_while_decoding_are_the_faces_of_the_decoded_frames(
    models_dir: Path, tmp_path: Path, workers: int
) -> None:
    """One chunk at a time on OpenCV's threads, or all three chunks at once on one thread each: the same faces
    as one pass over the decoded frames, in frame order."""
    face = face_image(models_dir, "df/df00204.jpg")
    path = tmp_path / "clip.mp4"
    write_video(path, [face_scene(face, size=(480, 360), at=(40 + 5 * i, 60), side=200) for i in range(40)], fps=10.0)
    settings = load_settings(data_dir=tmp_path, score_frames_per_video=20)
    _, decoded = decode_media(path, settings, tmp_path / "once")
    expected = find_faces(decoded, confidence=0.8, margin=0.2)
    _, frames = media_frames(path, settings, tmp_path / "streamed")
    count, faces, seconds = faces_while_decoding(frames, confidence=0.8, margin=0.2, chunk=8,  # 8 + 8 + 4
                                                 workers=workers)
    assert count == len(decoded) == 20 and len(faces) >= 15 and seconds > 0
    assert [(f.frame, f.box, f.t) for f in faces] == [(f.frame, f.box, f.t) for f in expected]
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(faces, expected, strict=True))


def test_a_face_whose_landmarks_do_not_fit_keeps_its_box_crop(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepwatch.media import landmarks
    from deepwatch.media.landmarks import Landmarks

    scene = face_scene(face_image(models_dir), size=(640, 480), at=(200, 110), side=220)
    (plain,) = find_faces([Frame(0, 0.0, scene)], confidence=0.8, margin=0.2)
    (aligned,) = find_faces([Frame(0, 0.0, scene)], confidence=0.8, margin=0.2, align_with=weight_file())
    assert aligned.box == plain.box and aligned.crop.shape != plain.crop.shape  # turned and resized by its landmarks

    def bunched(pictures: list[np.ndarray], boxes: list, weights: Path | None = None) -> list[Landmarks]:  # five points within 2 px: no face
        return [Landmarks(np.array([[b.x + i * 0.5, b.y + i * 0.5] for i in range(5)]), 0.99) for b in boxes]

    monkeypatch.setattr(landmarks, "face_landmarks", bunched)
    (kept,) = find_faces([Frame(0, 0.0, scene)], confidence=0.8, margin=0.2, align_with=weight_file())
    assert np.array_equal(kept.crop, plain.crop)


def test_an_aligned_face_larger_than_the_bound_is_area_averaged_down() -> None:
    import cv2

    from deepwatch.media.landmarks import Alignment

    stripes = np.zeros((2100, 2100, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: sampled rather than averaged, they alias into bands
    where = Alignment((1050.0, 1050.0), 2000.0, (0.0, 1.0))  # upright, over pixels 50..2049
    crop = upright_face(stripes, where)
    assert crop.shape == (MAX_ALIGNED_SIDE, MAX_ALIGNED_SIDE, 3)
    expected = cv2.resize(stripes[50:2050, 50:2050], (MAX_ALIGNED_SIDE,) * 2, interpolation=cv2.INTER_AREA)
    assert crop.std() < 5 and abs(crop.mean() - expected.mean()) < 2  # grey, as the stripes are on average
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8), (2100, 2100), interpolation=cv2.INTER_CUBIC)
    region = cv2.resize(smooth[50:2050, 50:2050], (MAX_ALIGNED_SIDE,) * 2, interpolation=cv2.INTER_AREA)
    # the same square (the frame is shrunk to a whole number of pixels first: a fraction of a pixel off)
    assert np.abs(upright_face(smooth, where).astype(float) - region).mean() < 6
    small = Alignment((100.0, 100.0), 100.0, (0.0, 1.0))  # within the bound: at its own size
    assert np.array_equal(upright_face(stripes, small), stripes[50:150, 50:150])


def test_busy_seconds_counts_overlapping_spans_once() -> None:
    assert busy_seconds([]) == 0.0
    assert busy_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)]) == pytest.approx(3.0)
    assert busy_seconds([(1.0, 2.0), (0.0, 3.0)]) == pytest.approx(3.0)  # one inside another, in any order


def test_read_ahead_hands_over_items_then_the_error_in_order() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise Corrupt("broken after two frames")

    got = []
    with pytest.raises(Corrupt, match="broken after two frames"):
        for item in read_ahead(items(), depth=1):
            got.append(item)
    assert got == [1, 2]


def test_a_reader_stopped_early_stops_and_closes_its_source_first() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in itertools.count():
                produced.append(i)
                yield i
        finally:
            closed.set()

    reader = read_ahead(items(), depth=2)
    assert next(reader) == 0
    reader.close()
    assert closed.is_set()  # before close() returned: the file being decoded may be removed now
    assert len(produced) <= 4  # one handed over, two waiting, one being offered


def test_sampling_interval_spreads_the_frames_over_the_duration() -> None:
    assert sampling_interval(10.0, 32) == pytest.approx(0.3125)
    assert sampling_interval(None, 32) == 1.0 and sampling_interval(0.0, 5) == 1.0


def test_aggregate_takes_each_frames_worst_face_then_the_mean() -> None:
    assert aggregate([0.2, 0.8, 0.4], [0, 0, 1]) == (pytest.approx(0.6), 2)
    assert aggregate([], []) == (None, 0)


def _face(frame: int, confidence: float, value: int) -> Face:
    return Face(frame, frame * 0.5, (0, 0, 40, 40), confidence, np.full((40, 40, 3), value, dtype=np.uint8))


def test_crops_are_resized_to_the_detectors_input() -> None:
    batch = crops_for([_face(0, 0.9, 10), _face(1, 0.9, 20)], 64)
    assert batch.shape == (2, 64, 64, 3) and batch.dtype == np.uint8
    assert crops_for([], 64).shape == (0, 64, 64, 3)
    assert resize(np.zeros((300, 200, 3), dtype=np.uint8), 256).shape == (256, 256, 3)


class _ClipMean(Detector):
    """Not a deepfake detector: a video-modality stand-in that returns the clip's mean brightness, so the test
    can see which crops it was given."""

    name = "clip_mean"
    version = "0"
    license = "MIT"
    source_url = "https://example.invalid"
    modality = "video"
    input_size = 16

    def load(self, models_dir: Path, cache_dir: Path | None = None) -> None:
        pass

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.array([batch.mean() / 255.0])


def test_a_video_detector_gets_the_best_face_of_each_frame_as_one_clip() -> None:
    faces = [_face(0, 0.9, 100), _face(0, 0.95, 200), _face(1, 0.8, 50)]
    assert [f.confidence for f in representative_faces(faces)] == [0.95, 0.8]
    score, per_face = run_detector(_ClipMean(), faces)
    assert score is not None and score.frames == 2
    assert score.p_fake == pytest.approx((200 + 50) / 2 / 255)
    assert per_face == [pytest.approx(score.p_fake)]


def test_face_scores_skip_clip_scores_and_keep_the_most_suspicious() -> None:
    faces = [_face(0, 0.9, 100), _face(0, 0.95, 200), _face(1, 0.8, 50)]
    crops = FaceCrops.of("ab" * 32, "video", 2, faces, [16])
    clip, _ = run_detector(_ClipMean(), faces)
    assert clip is not None
    scores = {"clip_mean": clip, "m": DetectorScore(p_fake=0.5, model_version="v", frames=2)}
    per_face = {"clip_mean": [clip.p_fake], "m": [0.2, 0.9, 0.4]}
    config = EnsembleConfig(platt={"m": (2.0, 0.0)})
    result = face_scores(crops, scores, per_face, config)
    assert [(f.t, f.frame, f.scores) for f in result] == [(0.0, 0, {"m": 0.2}), (0.0, 0, {"m": 0.9}), (0.5, 1, {"m": 0.4})]
    assert [f.score for f in result] == [pytest.approx(calibrate(p, 2.0), abs=1e-6) for p in (0.2, 0.9, 0.4)]
    kept = face_scores(crops, scores, per_face, config, limit=2)
    assert [f.scores["m"] for f in kept] == [0.9, 0.4]  # the two most suspicious, still in time order


def test_the_cli_scores_a_url_through_the_guard(
    models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path, site: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from deepwatch.cli import app

    face = face_image(models_dir, "df/df00204.jpg")
    path = tmp_path / "clip.mp4"
    write_video(path, [face_scene(face, size=(480, 360), at=(100 + 2 * i, 60), side=200) for i in range(20)],
                fps=10.0, gop=10)
    site.put("/v.mp4", path.read_bytes(), "video/mp4")  # type: ignore[attr-defined]
    url = f"{site.base}/v.mp4"  # type: ignore[attr-defined]
    argv = ["score", url, "--detectors", "meso4_df", "--json", "--data-dir", str(tmp_path)]
    refused = CliRunner().invoke(app, argv)  # loopback is refused by default: the SSRF guard is on
    assert refused.exit_code == 1 and json.loads(refused.stdout)["kind"] == "Blocked"
    monkeypatch.setenv("DEEPWATCH_FETCH_ALLOW_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("DEEPWATCH_SCORE_FRAMES_PER_VIDEO", "4")
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.stdout
    document = json.loads(result.stdout)
    want = score_file(path, load_settings(data_dir=tmp_path, score_frames_per_video=4), [mesonet["meso4_df"]])
    assert document["media_id"] == want.media_id and set(document["detectors"]) == {"meso4_df"}
    assert document["detectors"]["meso4_df"]["p_fake"] == pytest.approx(want.detectors["meso4_df"].p_fake, abs=1e-6)


def test_frames_in_one_batch_find_the_faces_they_find_one_by_one(models_dir: Path) -> None:
    from deepwatch.media.faces import detect_faces, detect_faces_batch

    scenes = [face_scene(face_image(models_dir, name), at=at) for name, at in
              (("real/real00240.jpg", (200, 110)), ("df/df00204.jpg", (40, 60)), ("real/real00772.jpg", (380, 200)))]
    empty = np.full((480, 640, 3), 90, np.uint8)
    odd_size = face_scene(face_image(models_dir), size=(400, 400), at=(90, 90), side=200)
    frames = [*scenes, empty, odd_size]  # two sizes: two batches
    one_by_one = [detect_faces(f, min_confidence=0.5) for f in frames]
    batched = detect_faces_batch(frames, min_confidence=0.5)
    assert [len(b) for b in one_by_one] == [len(b) for b in batched]
    assert all(len(b) >= 1 for i, b in enumerate(batched) if i != 3) and batched[3] == []
    for single, together in zip(one_by_one, batched, strict=True):
        for a, b in zip(single, together, strict=True):
            assert (a.x, a.y, a.w, a.h, a.cut) == (b.x, b.y, b.w, b.h, b.cut)
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
    assert detect_faces_batch([]) == []


def test_one_opencv_thread_finds_the_same_faces_and_restores_the_setting(models_dir: Path) -> None:
    import cv2

    from deepwatch.media.faces import detect_faces

    frame = face_scene(face_image(models_dir), size=(640, 360), at=(200, 60), side=220)
    before = cv2.getNumThreads()
    default, single = detect_faces(frame, min_confidence=0.5), detect_faces(frame, min_confidence=0.5, threads=1)
    assert len(default) == len(single) >= 1
    for a, b in zip(default, single, strict=True):
        assert (a.x, a.y, a.w, a.h) == (b.x, b.y, b.w, b.h) and a.confidence == pytest.approx(b.confidence, abs=1e-4)
    assert cv2.getNumThreads() == before


def test_the_face_network_is_safe_to_share_between_threads(models_dir: Path) -> None:
    # An API scoring in its thread pool while another thread fingerprints share one network; interleaved
    # setInput/forward calls used to fail inside OpenCV ("flags & FIXED_TYPE").
    import threading

    import cv2

    from deepwatch.media.faces import detect_faces, detect_faces_batch

    before = cv2.getNumThreads()
    big = [face_scene(face_image(models_dir), size=(1280, 720), at=(500, 200), side=300) for _ in range(6)]
    small = face_scene(face_image(models_dir), size=(320, 240), at=(80, 40), side=140)
    expected_big, expected_small = detect_faces_batch(big), detect_faces(small)
    results: list[object] = []

    def run(call: object) -> None:
        try:
            for _ in range(4):
                results.append(call())  # type: ignore[operator]
        except Exception as exc:  # the failure is what the test looks for
            results.append(exc)

    threads = [threading.Thread(target=run, args=(lambda: detect_faces_batch(big),)),
               threading.Thread(target=run, args=(lambda: detect_faces(small),)),
               threading.Thread(target=run, args=(lambda: detect_faces(small, threads=1),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [r for r in results if isinstance(r, Exception)]
    assert all(r in (expected_big, expected_small) for r in results)
    assert cv2.getNumThreads() == before  # the one-thread passes gave the setting back when the last one ended
