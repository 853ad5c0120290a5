"""Fingerprints of one media file, computed in one decoding pass.

``sha256`` of the bytes is the exact identity. The rest is near-duplicate evidence (see
:mod:`deepwatch.media.matching` for how it is weighed):

- per sampled frame (about one a second; keyframes where they are close together): PDQ, the index's hash,
  and the coarser pHash, which still agrees when two copies were sampled a few tenths of a second apart.
  Both are taken inside any black borders (letterboxed copies), of the mirror image (flipped copies) and of
  the centred 90 % (cropped copies);
- per face, on a few frames spread over the video (the detector is the costly part): PDQ and pHash of the
  crop, what tells a face-swapped variant from a duplicate; on those frames also a coarse luma grid of the
  scene and which of its cells the faces cover, so that a swap that changes much of the frame still shows
  as the same scene;
- videohash2's 64-bit hash of the whole video, recorded for the index and for comparison with that tool
  (weak evidence on its own).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from deepwatch.digest import sha256_file
from deepwatch.media.frames import SampledFrame, open_frames
from deepwatch.media.hashes import (
    bits_to_hex,
    centre_crop,
    content_box,
    grey,
    grid_mask,
    luma_grid,
    pdq,
    pdq_pair,
    phash,
    phash_pair,
)
from deepwatch.settings import default_field

if TYPE_CHECKING:
    from deepwatch.contracts import Fingerprints
    from deepwatch.media.faces import FaceBox
    from deepwatch.media.normalize import NormalizedMedia
    from deepwatch.settings import Settings

# Frames are rendered by the decoder's scaler (area averaging) at this long side for every hash, videohash2's
# 144x144 squares included (their collage and tiles are far coarser). PDQ works on 64x64 and smooths only sides
# over 128 px (shorter ones it samples), and more pixels only cost time (PDQ's own cost grows with them: a
# frame's hashes took 1.8 times as long at 256 px). One render at this size, and no other on frames the face
# detector skips, and its squares cost 0.3 ms a 720p frame against 0.9 ms for a 256 px render shrunk twice (by hand)
HASH_SIDE = 160
FACE_SIDE = 640  # face crops are cut from a larger render than the hashes', for small faces
KEEP_DECODED_PIXELS = 1920 * 1088  # a larger face frame gets its render for the crops at once, not kept decoded
FACE_CROP_SIDE = 64  # face crops are shrunk to PDQ's own working size before hashing
FACE_MARGIN = 0.1
SCENE_MASK_MARGIN = 0.3  # faces are left out of the scene this much wider than their boxes, hair and jaw included
MAX_FACES_PER_FRAME = 4
CROP_KEEP = 0.9


@dataclass(frozen=True)
class FrameHash:
    t: float
    pdq: str  # 64 hex, of the frame inside any black borders
    quality: int  # PDQ's 0-100; flat or featureless frames score low and are poor evidence
    pdq_flip: str | None = None  # of the left-right mirror image
    pdq_crop: str | None = None  # of the centred 90 % of each side
    phash: str | None = None  # 16 hex: coarse pHash, for copies sampled at other times (see matching)
    phash_flip: str | None = None
    phash_crop: str | None = None
    # only on frames where faces were found: the scene around them, so that a copy whose faces were swapped
    # (which may change the whole frame's hashes) can still be recognised as the same scene
    scene_grid: str | None = None  # 16x16 mean luma, 512 hex (deepwatch.media.hashes.luma_grid)
    scene_mask: str | None = None  # 256 bits, 64 hex: the grid cells the faces (and a margin) cover


@dataclass(frozen=True)
class FaceHash:
    t: float
    box: tuple[int, int, int, int]  # x, y, w, h in source pixels
    pdq: str
    confidence: float
    pdq_flip: str | None = None  # of the mirrored crop, to compare with faces in a flipped copy
    phash: str | None = None  # 16 hex: coarse pHash of the crop, steadier than PDQ when the box moves a little
    thumb: str | None = None  # 512 hex: the inner face, 16x16 grey (deepwatch.media.faces.face_thumbnail)
    # x, y, w, h as shares of the picture inside any black borders: where the face sits, comparable between
    # a copy and its letterboxed, resized or cropped re-upload
    place: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class FingerprintOptions:
    """What ``fingerprint_file`` reads of the settings; the defaults are the settings' own."""

    interval_s: float = default_field("fingerprint_interval_s")
    max_frames: int = default_field("fingerprint_max_frames")
    max_keyframe_gap_s: float = default_field("fingerprint_max_keyframe_gap_s")
    face_frames: int = default_field("fingerprint_face_frames")
    face_confidence: float = default_field("fingerprint_face_confidence")
    face_input_px: int = default_field("fingerprint_face_input_px")
    max_pixels: int = default_field("media_max_pixels")

    @classmethod
    def from_settings(cls, settings: Settings) -> FingerprintOptions:
        return cls(
            interval_s=settings.fingerprint_interval_s,
            max_frames=settings.fingerprint_max_frames,
            max_keyframe_gap_s=settings.fingerprint_max_keyframe_gap_s,
            face_frames=settings.fingerprint_face_frames,
            face_confidence=settings.fingerprint_face_confidence,
            face_input_px=settings.fingerprint_face_input_px,
            max_pixels=settings.media_max_pixels,
        )


@dataclass(frozen=True)
class MediaFingerprint:
    sha256: str
    kind: Literal["image", "video"]
    duration: float | None
    width: int | None
    height: int | None
    videohash: str | None  # 16 hex, videohash2's algorithm computed from our own decoded frames
    frames: tuple[FrameHash, ...]  # about 1 per second of video; one for an image
    faces: tuple[FaceHash, ...]
    decode_mode: str = ""  # "image", "keyframes", "p-frames", … (deepwatch.media.frames.DecodeMode)
    timings: dict[str, float] = field(default_factory=dict, compare=False)  # CPU seconds per step

    def to_contract(self) -> Fingerprints:
        from deepwatch.contracts import Fingerprints

        def complete(values: list[str | None]) -> list[str]:
            # all or nothing: the contract's lists are parallel to ``pdq`` or empty
            return [v for v in values if v] if all(values) else []

        frames, faces = self.frames, self.faces
        scenes = [f for f in frames if f.scene_grid]
        return Fingerprints(
            sha256=self.sha256,
            videohash=self.videohash,
            pdq=[f.pdq for f in self.frames],
            pdq_faces=[f.pdq for f in self.faces],
            frame_times=[round(f.t, 3) for f in self.frames],
            frame_quality=[f.quality for f in self.frames],
            pdq_flip=complete([f.pdq_flip for f in frames]),
            pdq_crop=complete([f.pdq_crop for f in frames]),
            phash=complete([f.phash for f in frames]),
            phash_flip=complete([f.phash_flip for f in frames]),
            phash_crop=complete([f.phash_crop for f in frames]),
            face_times=[round(f.t, 3) for f in faces],
            face_boxes=[list(f.box) for f in faces],
            pdq_faces_flip=complete([f.pdq_flip for f in faces]),
            phash_faces=complete([f.phash for f in faces]),
            face_thumbs=complete([f.thumb for f in faces]),
            face_places=[list(f.place) for f in faces] if all(f.place for f in faces) else [],
            scene_times=[round(f.t, 3) for f in scenes],
            scene_grid=[f.scene_grid for f in scenes if f.scene_grid],
            scene_mask=complete([f.scene_mask for f in scenes]),
        )

    @classmethod
    def from_contract(
        cls, fingerprints: Fingerprints, *, kind: Literal["image", "video"] = "video", duration: float | None = None
    ) -> MediaFingerprint:
        """Rebuild what the matcher needs from a stored contract (hashes from before times were stored get
        one-second steps and full quality)."""
        fp = fingerprints
        n, m = len(fp.pdq), len(fp.pdq_faces)

        def nth(values: list[str], i: int, count: int) -> str | None:
            return values[i] if len(values) == count else None

        times = [fp.frame_times[i] if len(fp.frame_times) == n else float(i) for i in range(n)]
        scene_at = {round(t, 3): k for k, t in enumerate(fp.scene_times)}
        frames = []
        for i in range(n):
            k = scene_at.get(round(times[i], 3)) if len(fp.frame_times) == n else None
            frames.append(
                FrameHash(
                    t=times[i],
                    pdq=fp.pdq[i],
                    quality=fp.frame_quality[i] if len(fp.frame_quality) == n else 100,
                    pdq_flip=nth(fp.pdq_flip, i, n),
                    pdq_crop=nth(fp.pdq_crop, i, n),
                    phash=nth(fp.phash, i, n),
                    phash_flip=nth(fp.phash_flip, i, n),
                    phash_crop=nth(fp.phash_crop, i, n),
                    scene_grid=None if k is None else fp.scene_grid[k],
                    scene_mask=None if k is None else nth(fp.scene_mask, k, len(fp.scene_times)),
                )
            )
        faces = tuple(
            FaceHash(
                t=fp.face_times[i] if len(fp.face_times) == m else 0.0,
                box=tuple(fp.face_boxes[i]) if len(fp.face_boxes) == m else (0, 0, 0, 0),  # type: ignore[arg-type]
                pdq=fp.pdq_faces[i],
                confidence=1.0,
                pdq_flip=nth(fp.pdq_faces_flip, i, m),
                phash=nth(fp.phash_faces, i, m),
                thumb=nth(fp.face_thumbs, i, m),
                place=tuple(fp.face_places[i]) if len(fp.face_places) == m else None,  # type: ignore[arg-type]
            )
            for i in range(m)
        )
        return cls(fp.sha256, kind, duration, None, None, fp.videohash, tuple(frames), faces)




def frame_hash(t: float, rgb: np.ndarray, faces: list[tuple[int, int, int, int]] | None = None) -> FrameHash:
    """PDQ and pHash of one frame inside its black borders, of its mirror image and of its centred 90 %;
    with ``faces`` (regions in ``rgb``'s pixels), also the scene's luma grid and which cells the faces cover."""
    luma = grey(rgb)  # once for the border search and both pHashes
    x, y, w, h = content_box(luma)
    picture, picture_luma = rgb[y : y + h, x : x + w], luma[y : y + h, x : x + w]
    pair = pdq_pair(picture)
    coarse, coarse_flip = phash_pair(picture_luma)
    grid = mask = None
    if faces:
        inside = [(fx - x, fy - y, fw, fh) for fx, fy, fw, fh in faces]
        grid = luma_grid(picture).tobytes().hex()
        mask = bits_to_hex(grid_mask(inside, w, h).flatten())
    cropped = pdq(centre_crop(picture, CROP_KEEP))
    cropped_coarse = phash(centre_crop(picture_luma, CROP_KEEP))
    return FrameHash(t, pair.pdq, pair.quality, pair.mirrored, cropped, coarse, coarse_flip, cropped_coarse, grid, mask)


def face_frame_indices(expected: int, budget: int) -> set[int]:
    """Which of ``expected`` samples the face detector runs on: at most ``budget``, spread evenly."""
    if budget <= 0:
        return set()
    if expected <= budget:
        return set(range(expected))
    return {int((k + 0.5) * expected / budget) for k in range(budget)}


def face_hashes(t: float, rgb: np.ndarray, boxes: list[FaceBox], source: tuple[int, int]) -> list[FaceHash]:
    """Hashes and inner-face thumbnail of each face's crop (a square a little wider than the box), with the box
    in source pixels and its place in the picture."""
    import cv2

    from deepwatch.media.faces import face_region, face_thumbnail

    height, width = rgb.shape[:2]
    sx, sy = source[0] / width, source[1] / height
    cx, cy, cw, ch = content_box(rgb)
    found = []
    for box in boxes:
        x, y, w, h = face_region(box, width, height, FACE_MARGIN)
        crop = cv2.resize(rgb[y : y + h, x : x + w], (FACE_CROP_SIDE, FACE_CROP_SIDE), interpolation=cv2.INTER_AREA)
        pair = pdq_pair(crop)
        coarse, _ = phash_pair(crop)
        thumb = face_thumbnail(rgb, box).tobytes().hex()
        in_source = (round(box.x * sx), round(box.y * sy), round(box.w * sx), round(box.h * sy))
        place = (round((box.x - cx) / cw, 4), round((box.y - cy) / ch, 4), round(box.w / cw, 4), round(box.h / ch, 4))
        found.append(FaceHash(t, in_source, pair.pdq, round(box.confidence, 4), pair.mirrored, coarse, thumb, place))
    return found


def rescaled(boxes: list[FaceBox], box_size: tuple[int, int], size: tuple[int, int]) -> list[FaceBox]:
    """Boxes found in a render of ``box_size`` (width, height), in the pixels of a render of ``size``."""
    sx, sy = size[0] / box_size[0], size[1] / box_size[1]
    return [
        dataclasses.replace(b, x=round(b.x * sx), y=round(b.y * sy), w=round(b.w * sx), h=round(b.h * sy))
        for b in boxes
    ]


def scene_masks(
    boxes: list[FaceBox], box_size: tuple[int, int], size: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """The regions to leave out of the scene grid of a frame of ``size``, for faces found in a render of
    ``box_size``."""
    from deepwatch.media.faces import face_region

    return [face_region(b, size[0], size[1], SCENE_MASK_MARGIN) for b in rescaled(boxes, box_size, size)]


def fingerprint_file(path: Path, *, settings: Settings | None = None) -> MediaFingerprint:
    """Fingerprint a local image or video in one decoding pass.

    Raises the typed errors of :func:`deepwatch.media.frames.open_frames`: ``NotFound``, ``Corrupt`` (also
    for an empty file), ``Unsupported``, ``TooLarge``.
    """
    from deepwatch.media.faces import detect_faces_batch, opencv_threads
    from deepwatch.media.videohash_compat import VideohashBuilder

    options = FingerprintOptions.from_settings(settings) if settings is not None else FingerprintOptions()
    clock = _Clock()
    path = Path(path)
    header, samples = open_frames(
        path,
        interval_s=options.interval_s,
        max_keyframe_gap_s=options.max_keyframe_gap_s,
        max_frames=options.max_frames,
        max_pixels=options.max_pixels,
    )
    clock.lap("open")
    face_at = face_frame_indices(header.expected_frames, options.face_frames)
    videohash: VideohashBuilder | None = None
    frames: list[FrameHash | None] = []  # None: a face frame, hashed once its faces are known
    face_frames: list[_FaceFrame] = []
    faces: list[FaceHash] = []
    width, height = header.width, header.height
    # OpenCV on one thread for the whole pass, as for decoding: the target is CPU time, and the worker runs
    # items in parallel. Set once here, not per detector call: each change of the count cost the next network
    # pass about 1.3 ms of CPU, a tenth of the pass
    with opencv_threads(1):
        for index, sample in enumerate(samples):
            clock.lap("decode")
            width, height = sample.width, sample.height  # as shown: a display matrix may turn the coded frame
            if header.kind == "video" and videohash is None:
                videohash = VideohashBuilder(width, height)
            small = sample.rgb(HASH_SIDE)
            if index in face_at:
                face_frames.append(_FaceFrame.keep(index, sample, small, options.face_input_px))
                frames.append(None)
            else:
                frames.append(frame_hash(sample.t, small))
            clock.lap("pdq")
            if videohash is not None:
                videohash.add(sample.t, small)
                clock.lap("videohash")
        clock.lap("decode")
        # the detector on all face frames in one pass, after decoding: one by one, between decoded frames, each
        # pass cost about 15 % more (the network's weights had left the caches)
        found = detect_faces_batch(
            [f.seen for f in face_frames], min_confidence=options.face_confidence, input_side=options.face_input_px
        )
        for face_frame, boxes in zip(face_frames, found, strict=True):
            # a face cut by the frame's edge shows differently in every crop of it: no evidence either way
            boxes = [b for b in boxes if not b.cut][:MAX_FACES_PER_FRAME]
            faces.extend(face_frame.face_hashes(boxes))
            frames[face_frame.index] = face_frame.frame_hash(boxes)
        # "faces" holds the detector, the face hashes and the face frames' own frame hashes; their renders were
        # counted under "pdq", in the loop
        clock.lap("faces")
    clock.lap("decode")
    vh = videohash.hexdigest(header.duration, header.frame_duration) if videohash else None
    clock.lap("videohash")
    digest = sha256_file(path)
    clock.lap("sha256")
    return MediaFingerprint(
        sha256=digest,
        kind=header.kind,
        duration=header.duration,
        width=width,
        height=height,
        videohash=vh,
        frames=tuple(f for f in frames if f is not None),
        faces=tuple(faces),
        decode_mode=header.mode,
        timings=clock.totals,
    )


def fingerprint_normalized(
    media: NormalizedMedia, *, settings: Settings | None = None, sha256: str | None = None
) -> MediaFingerprint:
    """Fingerprint a file as :func:`deepwatch.media.normalize.normalize` checked it, as the stream records it:
    the pixels detectors read (a lossless conversion where the original cannot be decoded frame by frame, an
    animated WebP for one), under the original's sha256 (``sha256``, when the caller has it already)."""
    fingerprint = fingerprint_file(media.detector_path, settings=settings)
    if media.detector_path != media.original:
        fingerprint = dataclasses.replace(fingerprint, sha256=sha256 or sha256_file(media.original))
    return fingerprint


@dataclass(frozen=True)
class _FaceFrame:
    """A sampled frame the face detector will see, kept until all of them have been through it: what its hashes
    and its faces' hashes need."""

    index: int
    t: float
    small: np.ndarray  # the hashes' render
    seen: np.ndarray  # the detector's render, at its input size
    # the decoded frame, or for a large one its render for the face crops: a frame kept decoded costs a few MB
    crops_from: SampledFrame | np.ndarray
    source: tuple[int, int]  # width and height as shown

    @classmethod
    def keep(cls, index: int, sample: SampledFrame, small: np.ndarray, input_px: int) -> _FaceFrame:
        large = sample.width * sample.height > KEEP_DECODED_PIXELS
        crops_from = sample.rgb(FACE_SIDE) if large else sample
        return cls(index, sample.t, small, sample.rgb(input_px), crops_from, (sample.width, sample.height))

    def face_hashes(self, boxes: list[FaceBox]) -> list[FaceHash]:
        if not boxes:
            return []  # and no render for crops
        big = self.crops_from if isinstance(self.crops_from, np.ndarray) else self.crops_from.rgb(FACE_SIDE)
        return face_hashes(self.t, big, rescaled(boxes, _size(self.seen), _size(big)), self.source)

    def frame_hash(self, boxes: list[FaceBox]) -> FrameHash:
        masks = scene_masks(boxes, _size(self.seen), _size(self.small)) if boxes else None
        return frame_hash(self.t, self.small, masks)


def _size(picture: np.ndarray) -> tuple[int, int]:
    return picture.shape[1], picture.shape[0]


class _Clock:
    """CPU seconds (this process, all threads) spent in each step."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._last = time.process_time()

    def lap(self, step: str) -> None:
        now = time.process_time()
        self.totals[step] = round(self.totals.get(step, 0.0) + now - self._last, 4)
        self._last = now
