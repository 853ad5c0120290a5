"""Score one media file locally: decode, find faces, crop, run the detectors, ensemble.

Each step is its own function so that the Serve deployments can run them apart (faces deployment:
:func:`decode_media` and :func:`find_faces`; one deployment per detector: ``detector.predict`` on
:func:`crops_for`; ensemble: :func:`aggregate` per detector, then :func:`serve.ensemble.decide`);
:func:`score_file` chains them in one process for ``deepwatch score``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deepwatch.contracts import DetectorScore
from deepwatch.digest import sha256_file
from deepwatch.settings import Settings
from serve.detectors.base import Detector
from serve.ensemble import EnsembleConfig, ScoreVerdict, decide, frame_score, media_score

# Video frames are rendered at most this long side: enough pixels for a face to fill a 256 crop in 720p and
# 1080p footage, without paying for 4K frames the face detector sees at 300 px anyway.
MAX_FRAME_SIDE = 1280
MAX_FACES_PER_FRAME = 4  # group shots: the most confident few; the frame's score is its worst face anyway


@dataclass(frozen=True)
class Frame:
    index: int  # position among the sampled frames
    t: float  # seconds from the first frame (0 for an image)
    rgb: np.ndarray  # uint8 (H, W, 3)


@dataclass(frozen=True)
class Face:
    frame: int  # Frame.index
    t: float
    box: tuple[int, int, int, int]  # x, y, w, h of the square crop in the frame's pixels
    confidence: float  # 1.0 for a whole aligned image
    crop: np.ndarray  # uint8 square crop at the frame's resolution


@dataclass
class ScoreResult:
    media_id: str  # sha256 of the bytes
    kind: Literal["image", "video"]
    verdict: ScoreVerdict
    score: float | None
    detectors: dict[str, DetectorScore]
    timings: dict[str, float]
    frames: int  # frames sampled
    faces: int  # face crops scored
    face_scores: dict[str, list[float]] = field(default_factory=dict)  # per detector, per face, for inspection

    def to_json(self) -> dict[str, Any]:
        return {
            "media_id": self.media_id,
            "kind": self.kind,
            "verdict": self.verdict,
            "score": self.score,
            "detectors": {name: s.model_dump(mode="json") for name, s in self.detectors.items()},
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "frames": self.frames,
            "faces": self.faces,
        }


# --- decoding ---------------------------------------------------------------------------------------------


def sampling_interval(duration: float | None, frames: int) -> float:
    """Seconds between ``frames`` evenly spaced samples over ``duration`` (1 s when the duration is unknown)."""
    if not duration or duration <= 0:
        return 1.0
    return duration / frames


def decode_media(path: Path, settings: Settings, workdir: Path) -> tuple[Literal["image", "video"], list[Frame]]:
    """The frames detectors see: an image's pixels, or ``score_frames_per_video`` evenly spaced video frames.

    The file is first checked by :func:`deepwatch.media.normalize.normalize` (decoding in a killable child
    process, under the time and pixel limits), so only bytes that decoded there are decoded here. Raises
    the typed :class:`deepwatch.media.errors.MediaError`.
    """
    from deepwatch.media.frames import open_frames
    from deepwatch.media.normalize import load_image_pixels, normalize

    media = normalize(path, settings=settings, workdir=workdir)
    if media.kind == "image":
        return "image", [Frame(0, 0.0, load_image_pixels(media.detector_path, settings))]
    wanted = settings.score_frames_per_video
    interval = sampling_interval(media.info.duration, wanted)
    # keyframes only when they are at least as dense as the samples: then they are the evenly spaced frames,
    # and decoding only them is several times cheaper than decoding the stream
    _, samples = open_frames(
        media.detector_path,
        interval_s=interval,
        max_keyframe_gap_s=interval,
        max_frames=wanted,
        max_pixels=settings.media_max_pixels,
    )
    frames: list[Frame] = []
    for sample in samples:
        frames.append(Frame(len(frames), sample.t, sample.rgb(MAX_FRAME_SIDE)))
        if len(frames) == wanted:
            break
    return "video", frames


# --- faces and crops --------------------------------------------------------------------------------------


def find_faces(
    frames: Sequence[Frame], *, confidence: float, margin: float, max_per_frame: int = MAX_FACES_PER_FRAME
) -> list[Face]:
    """Faces in each frame (res10 SSD), as square crops ``margin`` of the box wider on each side."""
    from deepwatch.media.faces import detect_faces, face_region

    faces: list[Face] = []
    for frame in frames:
        height, width = frame.rgb.shape[:2]
        for box in detect_faces(frame.rgb, min_confidence=confidence)[:max_per_frame]:
            x, y, w, h = face_region(box, width, height, margin)
            crop = frame.rgb[y : y + h, x : x + w]
            faces.append(Face(frame.index, frame.t, (x, y, w, h), box.confidence, np.ascontiguousarray(crop)))
    return faces


def whole_frames(frames: Sequence[Frame]) -> list[Face]:
    """Each frame as one face: for input that is already an aligned face crop (``--aligned``)."""
    return [
        Face(f.index, f.t, (0, 0, f.rgb.shape[1], f.rgb.shape[0]), 1.0, f.rgb) for f in frames
    ]


def resize(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` as ``side`` x ``side`` (a non-square input is stretched, as Keras' generators did)."""
    import cv2

    height, width = rgb.shape[:2]
    if (height, width) == (side, side):
        return rgb
    # area averaging when shrinking (no aliasing), bilinear when enlarging
    shrink = side < min(height, width)
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crops_for(faces: Sequence[Face], side: int) -> np.ndarray:
    """The batch a detector of input size ``side`` takes: uint8 (N, side, side, 3)."""
    if not faces:
        return np.zeros((0, side, side, 3), dtype=np.uint8)
    return np.stack([resize(f.crop, side) for f in faces])


def representative_faces(faces: Sequence[Face]) -> list[Face]:
    """The most confident face of each frame, in time order: what a video detector gets as one clip."""
    best: dict[int, Face] = {}
    for face in faces:
        if face.frame not in best or face.confidence > best[face.frame].confidence:
            best[face.frame] = face
    return [best[k] for k in sorted(best)]


# --- per-detector aggregation and the result --------------------------------------------------------------


def aggregate(p_fake: Sequence[float] | np.ndarray, frame_ids: Sequence[int]) -> tuple[float | None, int]:
    """One detector's per-face P(fake) -> its media score (mean over frames of each frame's worst face) and
    the number of frames that had a face."""
    by_frame: dict[int, list[float]] = {}
    for frame, p in zip(frame_ids, p_fake, strict=True):
        by_frame.setdefault(frame, []).append(float(p))
    return media_score(frame_score(v) for v in by_frame.values()), len(by_frame)


def run_detector(detector: Detector, faces: Sequence[Face]) -> tuple[DetectorScore | None, list[float]]:
    """Run one detector over the faces; None when there are none."""
    if not faces:
        return None, []
    if detector.modality == "video":
        clip = representative_faces(faces)
        p = np.asarray(detector.predict(crops_for(clip, detector.input_size)), dtype=np.float64).reshape(-1)
        if p.shape != (1,):
            raise ValueError(f"video detector {detector.name} returned {p.shape[0]} scores for one clip, not 1")
        score, frames, per_face = float(p[0]), len(clip), [float(p[0])]
    else:
        p = np.asarray(detector.predict(crops_for(faces, detector.input_size)), dtype=np.float64).reshape(-1)
        if p.shape != (len(faces),):
            raise ValueError(f"detector {detector.name} returned {p.shape[0]} scores for {len(faces)} crops")
        value, frames = aggregate(p, [f.frame for f in faces])
        assert value is not None
        score, per_face = value, p.tolist()
    if not (np.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f"detector {detector.name} returned P(fake) {score}, outside [0, 1]")
    return DetectorScore(p_fake=score, model_version=detector.model_version(), frames=frames), per_face


def score_file(
    path: Path, settings: Settings, detectors: Sequence[Detector] | None = None, aligned: bool = False
) -> ScoreResult:
    """Score one local media file with ``detectors`` (default: the settings' detectors, loaded).

    ``aligned``: the file is already an aligned face crop (or a video of them); every frame is fed whole.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = now - since
        return now

    if detectors is None:
        from serve.detectors.registry import load_detectors

        detectors = load_detectors(settings)
        mark = lap("load", started)
    else:
        mark = started
    media_id = sha256_file(path)
    mark = lap("sha256", mark)
    with tempfile.TemporaryDirectory(prefix="dw-score-") as workdir:
        kind, frames = decode_media(path, settings, Path(workdir))
    mark = lap("decode", mark)
    if aligned:
        faces = whole_frames(frames)
    else:
        faces = find_faces(frames, confidence=settings.score_face_confidence, margin=settings.score_face_margin)
    mark = lap("faces", mark)
    scores: dict[str, DetectorScore] = {}
    per_face: dict[str, list[float]] = {}
    for detector in detectors:
        result, per_face[detector.name] = run_detector(detector, faces)
        if result is not None:
            scores[detector.name] = result
        mark = lap(f"detector.{detector.name}", mark)
    score, decided = decide({n: s.p_fake for n, s in scores.items()}, EnsembleConfig.from_settings(settings))
    lap("ensemble", mark)
    timings["total"] = time.perf_counter() - started
    return ScoreResult(media_id, kind, decided, score, scores, timings, len(frames), len(faces), per_face)
