"""Each scored face of a record, cut out of the frame it was scored in, for the workbench's media page and for
the face crops of a dataset export.

A record keeps where each face was (``FaceScore``: its sampled frame, its box, and for a face aligned by its
landmarks the square it was turned upright from), not its pixels. The stored media is decoded again the way
scoring decoded it (:func:`serve.scoring.decode_media`: the same normalizing, the same evenly spaced frames at
the same size), so a box lands on the pixels it was drawn on; only the frames that hold a face are rendered.
That works while the media is stored: flagged fakes always are, other media only with ``store_keep_media``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deepwatch.contracts import FaceScore
from deepwatch.settings import Settings
from storage.export.faces import CropFaces

CROP_SIDE = 128  # pixels of the square JPEG served per face
FRAME_TIME_TOLERANCE_S = 0.002  # a face's time is kept to 1 ms


def crop(rgb: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The part of ``rgb`` (H, W, 3) under ``box`` (x, y, w, h), clipped to the frame; empty if outside it."""
    x, y, w, h = box
    height, width = rgb.shape[:2]
    return rgb[max(y, 0) : min(y + h, height), max(x, 0) : min(x + w, width)]


def to_jpeg(pixels: np.ndarray, side: int = CROP_SIDE) -> bytes:
    image = Image.fromarray(pixels)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def face_crops(media: Path, faces: Sequence[FaceScore], settings: Settings, workdir: Path) -> list[bytes | None]:
    """A JPEG per face of ``faces`` (None where its frame or box is no longer there), decoding ``media`` once.
    Raises the typed media errors of decoding."""
    return [None if part is None else to_jpeg(part) for part in scored_crops(media, faces, settings, workdir)]


def cropper(settings: Settings) -> CropFaces:
    """:func:`scored_crops` with these settings, as a dataset export takes it."""
    return lambda media, faces, workdir: scored_crops(media, faces, settings, workdir)


def scored_crops(
    media: Path, faces: Sequence[FaceScore], settings: Settings, workdir: Path
) -> list[np.ndarray | None]:
    """The pixels of each face of ``faces`` as the detectors scored them (RGB, before their resize), decoding
    ``media`` once; None where the face's frame or box is no longer there. A frame counts as there only at the
    face's time: with ``score_frames_per_video`` changed since scoring, the same position is another frame.
    Raises the typed media errors of decoding."""
    from serve.scoring import decode_media

    _, frames = decode_media(media, settings, workdir, only={f.frame for f in faces})
    shown = {frame.index: frame for frame in frames}
    out: list[np.ndarray | None] = []
    for face in faces:
        frame = shown.get(face.frame)
        if frame is None or abs(frame.t - face.t) > FRAME_TIME_TOLERANCE_S:
            out.append(None)
            continue
        part = scored_crop(frame.rgb, face)
        out.append(part if part.size else None)
    return out


def scored_crop(rgb: np.ndarray, face: FaceScore) -> np.ndarray:
    """The crop the detectors scored: the face's square turned upright when it was aligned, else its box."""
    if face.aligned is None:
        return crop(rgb, face.box)
    from deepwatch.media.landmarks import Alignment
    from serve.scoring import upright_face

    return upright_face(rgb, Alignment.from_recorded(face.aligned))
