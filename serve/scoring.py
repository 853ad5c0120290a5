"""Score one media file locally: decode, find faces, crop, run the detectors, ensemble.

Each step is its own function so that the Serve deployments (:mod:`serve.deployments`) run them apart:
the faces deployment :func:`prepare` (hash, decode, faces, crops per input size, as :class:`FaceCrops`), one
deployment per detector ``predict`` on :func:`detector_input` then :func:`detector_result`, and the ingress
:func:`finish` (the ensemble); :func:`score_file` chains them in one process for ``deepwatch score``.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from deepwatch.contracts import MAX_FACE_SCORES, DetectorScore, EnsembleSettings, FaceScore
from deepwatch.digest import sha256_file
from deepwatch.settings import Settings
from serve.detectors.base import Detector
from serve.ensemble import EnsembleConfig, ScoreVerdict, decide, face_ensemble, frame_score, media_score

if TYPE_CHECKING:
    from deepwatch.media.faces import FaceBox
    from deepwatch.media.landmarks import Alignment

# Video frames are rendered at most this long side: enough pixels for a face to fill a 256 crop in 720p and
# 1080p footage, without paying for 4K frames the face detector sees at 300 px anyway.
MAX_FRAME_SIDE = 1280
MAX_FACES_PER_FRAME = 4  # group shots: the most confident few; the frame's score is its worst face anyway
# an aligned crop is cut at about the face's own size, within these bounds (then resized to each detector's input)
MIN_ALIGNED_SIDE, MAX_ALIGNED_SIDE = 32, 1024
FACE_CHUNK = 8  # frames per pass of the face detector while the next ones are decoded (as fast as 32 a pass)

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    index: int  # position among the sampled frames
    t: float  # seconds from the first frame (0 for an image)
    rgb: np.ndarray  # uint8 (H, W, 3)


@dataclass(frozen=True)
class Face:
    frame: int  # Frame.index
    t: float
    box: tuple[int, int, int, int]  # x, y, w, h of the face's square (the box with a margin) in the frame's pixels
    confidence: float  # 1.0 for a whole aligned image
    crop: np.ndarray  # uint8 square crop at the frame's resolution
    # aligned by its landmarks: centre x, y and side of the square the crop was turned upright from, and the roll
    aligned: tuple[float, float, float, float] | None = None


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
    per_face: dict[str, list[float]] = field(default_factory=dict)  # per detector, per face (a clip's one score)
    face_scores: list[FaceScore] = field(default_factory=list)  # per face: where, when and its scores
    ensemble: EnsembleSettings | None = None  # the settings that gave score and verdict

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
            "face_scores": [f.model_dump(mode="json") for f in self.face_scores],
            "ensemble": None if self.ensemble is None else self.ensemble.model_dump(mode="json"),
        }


# --- decoding ---------------------------------------------------------------------------------------------


def sampling_interval(duration: float | None, frames: int) -> float:
    """Seconds between ``frames`` evenly spaced samples over ``duration`` (1 s when the duration is unknown)."""
    if not duration or duration <= 0:
        return 1.0
    return duration / frames


def decode_media(
    path: Path, settings: Settings, workdir: Path, only: Collection[int] | None = None
) -> tuple[Literal["image", "video"], list[Frame]]:
    """The frames detectors see: an image's pixels, or ``score_frames_per_video`` evenly spaced video frames
    (with ``only``, just the frames at those positions among them, for cutting out faces scored before).

    The file is first checked by :func:`deepwatch.media.normalize.normalize` (decoding in a killable child
    process, under the time and pixel limits), so only bytes that decoded there are decoded here. Raises
    the typed :class:`deepwatch.media.errors.MediaError`.
    """
    kind, frames = media_frames(path, settings, workdir, only)
    return kind, list(frames)


def media_frames(
    path: Path, settings: Settings, workdir: Path, only: Collection[int] | None = None
) -> tuple[Literal["image", "video"], Iterator[Frame]]:
    """:func:`decode_media`, with the file checked now and a video's frames decoded as they are read
    (``workdir`` must outlive the reading)."""
    from deepwatch.media.frames import open_frames
    from deepwatch.media.normalize import load_image_pixels, normalize

    media = normalize(path, settings=settings, workdir=workdir)
    if media.kind == "image":
        return "image", iter([Frame(0, 0.0, load_image_pixels(media.detector_path, settings))])
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

    def frames() -> Iterator[Frame]:
        for index, sample in enumerate(samples):
            if only is None or index in only:
                yield Frame(index, sample.t, sample.rgb(MAX_FRAME_SIDE))
            if index + 1 == wanted:
                break

    return "video", frames()


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced by a thread up to ``depth`` ahead of the consumer, so that decoding (one core; PyAV
    and OpenCV release the GIL) overlaps the face detector's passes over the frames already decoded.

    An exception from ``items`` reaches the consumer where it would have without the thread. A consumer that
    stops early stops the thread, which closes ``items``, before this generator ends: the file it reads may
    be removed right after.
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


# --- faces and crops --------------------------------------------------------------------------------------


def find_faces(
    frames: Sequence[Frame], *, confidence: float, margin: float, max_per_frame: int = MAX_FACES_PER_FRAME,
    threads: int = 0, align_with: Path | None = None,
) -> list[Face]:
    """Faces in each frame (res10 SSD), as square crops ``margin`` of the box wider on each side; with
    ``align_with`` (the landmark network's weight file, :func:`deepwatch.media.landmarks.weight_file`), turned
    upright and framed by their landmarks instead where the landmark network takes the box for a face.
    ``threads``: OpenCV's for the pass (0: its own setting)."""
    from deepwatch.media.faces import detect_faces_batch, face_region

    found = detect_faces_batch([frame.rgb for frame in frames], min_confidence=confidence, threads=threads)
    kept = [(frame, box) for frame, boxes in zip(frames, found, strict=True) for box in boxes[:max_per_frame]]
    upright = aligned_crops(kept, align_with) if align_with else [None] * len(kept)
    faces: list[Face] = []
    for (frame, box), aligned in zip(kept, upright, strict=True):
        height, width = frame.rgb.shape[:2]
        x, y, w, h = face_region(box, width, height, margin)
        if aligned is None:
            crop, turn = np.ascontiguousarray(frame.rgb[y : y + h, x : x + w]), None
        else:
            crop, turn = aligned[0], aligned[1].recorded()
        faces.append(Face(frame.index, frame.t, (x, y, w, h), box.confidence, crop, turn))
    return faces


def aligned_crops(
    faces: Sequence[tuple[Frame, FaceBox]], weights: Path | None = None
) -> list[tuple[np.ndarray, Alignment] | None]:
    """Each face's upright crop at about its own resolution and where it came from, or None where ONet does not
    see a face in the box or its landmarks do not fit the box (:func:`deepwatch.media.landmarks.fits_box`): that
    face keeps its box's crop."""
    from deepwatch.media.landmarks import MIN_FACE_PROBABILITY, alignment, face_landmarks, fits_box

    crops: list[tuple[np.ndarray, Alignment] | None] = []
    marked = face_landmarks([frame.rgb for frame, _ in faces], [box for _, box in faces], weights)
    for (frame, box), marks in zip(faces, marked, strict=True):
        where = alignment(marks.points) if marks.probability >= MIN_FACE_PROBABILITY else None
        if where is None or not fits_box(where, box):
            crops.append(None)
            continue
        crops.append((upright_face(frame.rgb, where), where))
    return crops


def upright_face(rgb: np.ndarray, where: Alignment) -> np.ndarray:
    """The aligned crop of ``where`` at about the square's own resolution, within bounds. For a square larger
    than the bound (a close-up in a photo) the frame is area-averaged down first: the warp samples bilinearly,
    which aliases when it shrinks, and cutting such a square whole could take gigabytes in a large photo."""
    import cv2

    from deepwatch.media.landmarks import Alignment, aligned_crop

    side = max(round(where.side), MIN_ALIGNED_SIDE)
    if side > MAX_ALIGNED_SIDE:
        height, width = rgb.shape[:2]
        size = (max(1, round(width * MAX_ALIGNED_SIDE / side)), max(1, round(height * MAX_ALIGNED_SIDE / side)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / width, size[1] / height
        where = Alignment((where.centre[0] * sx, where.centre[1] * sy), where.side * sx, where.down)
        side = MAX_ALIGNED_SIDE
    return aligned_crop(rgb, where, side)


def face_workers(setting: int) -> int:
    """Passes of the face detector to run at once for ``score_face_workers`` (0: one per CPU OpenCV counts,
    which reads the container's CPU quota too)."""
    if setting > 0:
        return setting
    import cv2

    return max(1, cv2.getNumberOfCPUs())


def faces_while_decoding(
    frames: Iterator[Frame], *, confidence: float, margin: float, chunk: int = FACE_CHUNK, workers: int = 1,
    align_with: Path | None = None,
) -> tuple[int, list[Face], float]:
    """:func:`find_faces` over ``frames`` ``chunk`` at a time while a thread decodes the next ones: how many
    frames there were, their faces (in frame order), and the seconds during which the detector was running.

    With ``workers`` > 1, that many chunks go through the detector at once, each on one OpenCV thread. On this
    machine's two cores two such passes found the faces of 32 720p frames in ~0.6 s, against ~0.77 s for one
    pass at a time on OpenCV's two threads, which split every layer and wait for each other at its end."""
    threads = 1 if workers > 1 else 0
    spans: list[tuple[float, float]] = []

    def detect(part: list[Frame]) -> list[Face]:
        started = time.perf_counter()
        try:
            return find_faces(part, confidence=confidence, margin=margin, threads=threads, align_with=align_with)
        finally:
            spans.append((started, time.perf_counter()))  # list.append is atomic under the GIL

    count, pending = 0, []
    running: list[Future[list[Face]]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="faces") as pool:
        for frame in read_ahead(frames, depth=2 * chunk):
            count += 1
            pending.append(frame)
            if len(pending) == chunk:
                # at most one chunk waiting per worker: frames of 720p and up are megabytes each
                if sum(not f.done() for f in running) >= 2 * max(1, workers):
                    wait([f for f in running if not f.done()], return_when=FIRST_COMPLETED)
                running.append(pool.submit(detect, pending))
                pending = []
        if pending:
            running.append(pool.submit(detect, pending))
        faces = [face for future in running for face in future.result()]
    return count, faces, busy_seconds(spans)


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """How long at least one of the ``(start, end)`` spans was under way (their union's length)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


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


@dataclass
class FaceCrops:
    """What the faces step hands every detector: one media item's face crops, resized once per input size.

    Numpy arrays and plain lists only, so it crosses Ray's object store cheaply (the crops zero-copy).
    """

    media_id: str
    kind: Literal["image", "video"]
    frames: int  # frames sampled
    face_frames: list[int]  # Face.frame of each crop, in crop order
    clip: list[int]  # per frame with a face, the crop index of its most confident face, in time order
    crops: dict[int, np.ndarray]  # input side -> uint8 (faces, side, side, 3)
    timings: dict[str, float] = field(default_factory=dict)
    face_times: list[float] = field(default_factory=list)  # Face.t of each crop
    face_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # Face.box of each crop
    face_aligned: list[tuple[float, float, float, float] | None] = field(default_factory=list)  # Face.aligned

    @property
    def faces(self) -> int:
        return len(self.face_frames)

    @classmethod
    def of(
        cls, media_id: str, kind: Literal["image", "video"], frames: int, faces: Sequence[Face], sides: Iterable[int]
    ) -> FaceCrops:
        best = {id(f): i for i, f in enumerate(faces)}
        clip = [best[id(f)] for f in representative_faces(faces)]
        crops = {side: crops_for(faces, side) for side in sorted(set(sides))}
        return cls(
            media_id, kind, frames, [f.frame for f in faces], clip, crops,
            face_times=[f.t for f in faces], face_boxes=[f.box for f in faces],
            face_aligned=[f.aligned for f in faces],
        )


def detector_input(crops: FaceCrops, detector: Detector | type[Detector]) -> np.ndarray:
    """The batch ``detector`` takes for this media: every crop, or for a video detector the clip."""
    batch = crops.crops[detector.input_size]
    return batch[crops.clip] if detector.modality == "video" else batch


def detector_result(
    detector: Detector | type[Detector], p_fake: np.ndarray, crops: FaceCrops
) -> tuple[DetectorScore | None, list[float]]:
    """One detector's output on :func:`detector_input` -> its media score (None without faces) and per-face
    scores; the output's shape and range are checked, since a plug-in may get them wrong."""
    if crops.faces == 0:
        return None, []
    p = np.asarray(p_fake, dtype=np.float64).reshape(-1)
    if detector.modality == "video":
        if p.shape != (1,):
            raise ValueError(f"video detector {detector.name} returned {p.shape[0]} scores for one clip, not 1")
        score, frames, per_face = float(p[0]), len(crops.clip), [float(p[0])]
    else:
        if p.shape != (crops.faces,):
            raise ValueError(f"detector {detector.name} returned {p.shape[0]} scores for {crops.faces} crops")
        value, frames = aggregate(p, crops.face_frames)
        assert value is not None
        score, per_face = value, p.tolist()
    if not (np.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f"detector {detector.name} returned P(fake) {score}, outside [0, 1]")
    return DetectorScore(p_fake=score, model_version=detector.model_version(), frames=frames), per_face


def score_detector(detector: Detector, crops: FaceCrops) -> tuple[DetectorScore | None, list[float]]:
    if crops.faces == 0:
        return None, []
    return detector_result(detector, detector.predict(detector_input(crops, detector)), crops)


def run_detector(detector: Detector, faces: Sequence[Face]) -> tuple[DetectorScore | None, list[float]]:
    """Run one detector over the faces; None when there are none."""
    return score_detector(detector, FaceCrops.of("", "image", 0, faces, [detector.input_size]))


def landmark_weights(settings: Settings) -> Path | None:
    """The landmark network's weight file when faces are to be aligned (``score_align_faces``), else None.
    Raises ``LandmarksUnavailable`` (naming how to get the file) when they are to be and it is missing."""
    if not settings.score_align_faces:
        return None
    from deepwatch.media.landmarks import weight_file

    return weight_file(settings.models_path)


def prepare(path: Path, settings: Settings, sides: Iterable[int], aligned: bool = False) -> FaceCrops:
    """The faces step: hash, decode, find faces (or take whole frames when ``aligned``), crop to ``sides``."""
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[stage] = now - mark
        mark = now

    media_id = sha256_file(path)
    lap("sha256")
    with tempfile.TemporaryDirectory(prefix="dw-score-") as workdir:
        kind, frames = media_frames(path, settings, Path(workdir))
        if aligned:
            decoded = list(frames)
            count, faces = len(decoded), whole_frames(decoded)
            lap("decode")
            timings["faces"] = 0.0
        else:
            count, faces, detecting = faces_while_decoding(
                frames, confidence=settings.score_face_confidence, margin=settings.score_face_margin,
                workers=face_workers(settings.score_face_workers), align_with=landmark_weights(settings),
            )
            # the two overlap: "faces" is the detector's own time, "decode" the rest (checking the file and
            # waiting for frames), so that they still add up to the stage's time
            lap("decode")
            timings["decode"] -= detecting
            timings["faces"] = detecting
    crops = FaceCrops.of(media_id, kind, count, faces, sides)
    lap("crops")
    crops.timings = timings
    return crops


def face_scores(
    crops: FaceCrops, scores: dict[str, DetectorScore], per_face: dict[str, list[float]], config: EnsembleConfig,
    limit: int = MAX_FACE_SCORES,
) -> list[FaceScore]:
    """Each face with the P(fake) of every detector that scored it alone (a video detector's one clip score
    is no face's own) and their ensemble, with the media score's calibration and weights. Beyond ``limit``
    faces the most suspicious are kept, since a moderator looks for where a clip is fake."""
    if not crops.face_times:  # crops from a faces replica older than per-face scores
        return []
    # a video detector answers once per clip: its one score is a face's own only when there is one face
    alone = {n: p for n, p in per_face.items() if n in scores and len(p) == crops.faces}
    faces = []
    for i in range(crops.faces):
        mine = {name: round(float(p[i]), 6) for name, p in alone.items()}
        turn = crops.face_aligned[i] if len(crops.face_aligned) == crops.faces else None
        faces.append(FaceScore(
            t=round(crops.face_times[i], 3), frame=crops.face_frames[i], box=list(crops.face_boxes[i]),
            scores=mine, score=face_ensemble(mine, config), aligned=None if turn is None else list(turn),
        ))
    if len(faces) > limit:
        worst = sorted(range(len(faces)), key=lambda i: -(faces[i].score or 0.0))[:limit]
        faces = [faces[i] for i in sorted(worst)]
    return faces


def finish(
    crops: FaceCrops,
    scores: dict[str, DetectorScore],
    per_face: dict[str, list[float]],
    timings: dict[str, float],
    config: EnsembleConfig,
) -> ScoreResult:
    """The ensemble step: the detectors' media scores -> ensemble score and verdict, and the result."""
    started = time.perf_counter()
    score, decided = decide({n: s.p_fake for n, s in scores.items()}, config)
    timings = {**crops.timings, **timings, "ensemble": time.perf_counter() - started}
    return ScoreResult(
        crops.media_id, crops.kind, decided, score, scores, timings, crops.frames, crops.faces,
        per_face=per_face, face_scores=face_scores(crops, scores, per_face, config), ensemble=config.recorded(),
    )


def score_file(
    path: Path, settings: Settings, detectors: Sequence[Detector] | None = None, aligned: bool = False
) -> ScoreResult:
    """Score one local media file with ``detectors`` (default: the settings' detectors, loaded), in this process.

    ``aligned``: the file is already an aligned face crop (or a video of them); every frame is fed whole.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if detectors is None:
        from serve.detectors.registry import load_detectors

        detectors = load_detectors(settings)
        timings["load"] = time.perf_counter() - started
    crops = prepare(path, settings, [d.input_size for d in detectors], aligned)
    scores: dict[str, DetectorScore] = {}
    per_face: dict[str, list[float]] = {}
    for detector in detectors:
        mark = time.perf_counter()
        result, per_face[detector.name] = score_detector(detector, crops)
        if result is not None:
            scores[detector.name] = result
        timings[f"detector.{detector.name}"] = time.perf_counter() - mark
    result = finish(crops, scores, per_face, timings, EnsembleConfig.from_settings(settings))
    result.timings["total"] = time.perf_counter() - started
    return result
