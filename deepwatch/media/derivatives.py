"""Display derivatives (a JPEG thumbnail, a small MP4 preview) and the one lossless conversion.

Derivatives are for people, never for detectors: they are scaled, re-encoded and carry no metadata
(EXIF and GPS are dropped). :func:`write_lossless_video` is the exception that detectors do read: it
turns an animation that FFmpeg cannot decode (animated WebP, AVIF sequences) into FFV1 in Matroska,
8-bit RGB, so the frames detectors see are exactly the frames Pillow decoded, with no new
compression traces.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

THUMBNAIL_QUALITY = 85
PREVIEW_CRF = 28
PREVIEW_MAX_FPS = 15.0


def save_thumbnail(image: Image.Image, path: Path, max_side: int) -> tuple[int, int]:
    """Save an upright ``image`` as a JPEG whose longer side is at most ``max_side``; return its size."""
    from PIL import Image as PILImage

    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    thumb.save(path, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return thumb.size


def rotate_frame(image: Image.Image, rotation: int) -> Image.Image:
    """A video frame turned for display: ``rotation`` is the counter-clockwise angle of its display matrix."""
    quarter = round(rotation / 90) % 4
    return image.rotate(90 * quarter, expand=True) if quarter else image


def fit_even(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size that fits ``max_side`` keeping the aspect ratio, both sides even (yuv420p needs it), never upscaled."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def preview_frames(frames: Iterable[Any], *, max_side: int, max_s: float, fps: float) -> Iterator[Any]:
    """RGB arrays for a preview from decoded ``av`` video frames: the first ``max_s`` seconds at most ``fps``.

    Frames without a timestamp are taken as ``fps`` apart.
    """
    import numpy as np

    step = 1.0 / fps
    start: float | None = None
    next_t = 0.0
    for count, frame in enumerate(frames):
        t = float(frame.time) if frame.time is not None else count * step
        if start is None:
            start = next_t = t
        if t >= start + max_s:
            break
        if t + 1e-6 < next_t:
            continue
        next_t = max(next_t + step, t)
        image = rotate_frame(frame.to_image(), getattr(frame, "rotation", 0) or 0)
        size = fit_even(*image.size, max_side)
        if size != image.size:
            image = image.resize(size)
        yield np.asarray(image.convert("RGB"))


def write_lossless_video(path: Path, frames: Iterable[tuple[Image.Image, int]]) -> tuple[int, int]:
    """Write (image, duration in ms) pairs losslessly (FFV1, 8-bit RGB, Matroska); return (frames, total ms).

    The frame rate written is the first frame's; each frame keeps its own duration in its timestamp.
    """
    import av

    items = iter(frames)
    first = next(items, None)
    if first is None:
        raise ValueError("no frames")
    count = total_ms = 0
    with av.open(str(path), mode="w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=Fraction(1000, max(1, first[1])))
        stream.pix_fmt = "bgr0"
        stream.width, stream.height = first[0].size
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, duration_ms in itertools.chain([first], items):
            frame = av.VideoFrame.from_image(image.convert("RGB")).reformat(format="bgr0")
            frame.pts = total_ms
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
            total_ms += max(1, duration_ms)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count, total_ms
