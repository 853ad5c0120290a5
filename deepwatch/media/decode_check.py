"""The decode check: everything that decodes untrusted bytes, run in a child process under a time limit.

:mod:`deepwatch.media.normalize` starts ``python -m deepwatch.media.decode_check`` and sends it one
JSON request per line on stdin; each answer is one JSON line on stdout, ``{"ok": {...}}`` or
``{"error": "Corrupt"|"TooLarge"|"Unsupported", "message": "..."}``. A decoder that crashes or spins
takes only this process down, and the parent kills it on its time limit. :func:`handle` is the same
work in-process, for tests.

Operations: ``check`` (structure, decode, probe, orientation, thumbnail, and the one conversion) and
``preview`` (a small MP4 of the first seconds of a video).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from deepwatch.contracts import MediaInfo
from deepwatch.media.derivatives import (
    PREVIEW_CRF,
    PREVIEW_MAX_FPS,
    preview_frames,
    rotate_frame,
    save_thumbnail,
    write_lossless_video,
)
from deepwatch.media.errors import Corrupt, MediaError, TooLarge, Unsupported
from deepwatch.media.images import ANIMATED_FORMATS, apply_orientation, check_pixels, exif_orientation, open_image
from deepwatch.media.probe import media_info
from deepwatch.media.sniff import formats
from deepwatch.media.structure import check_structure, jpeg_end

# FFmpeg demuxer for each format decoded as video: the file must demux as what it was sniffed as.
DEMUXERS = {
    "mp4": "mov", "mov": "mov", "3gp": "mov", "matroska": "matroska", "webm": "matroska", "avi": "avi",
    "flv": "flv", "mpegts": "mpegts", "ogg": "ogg", "mpeg": "mpeg", "gif": "gif", "png": "apng",
}
# Animations FFmpeg decodes as they are; other animations (WebP, AVIF sequences) are converted.
NATIVE_ANIMATIONS = frozenset({"gif", "png"})
_FIRST_FRAME_PACKETS = 2000  # packets read looking for the first decodable frame
_LIBJPEG_CORRUPT = re.compile(rb"(Corrupt JPEG data[^\n]*|Premature end of JPEG file)")


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError, OverflowError)


# --- JPEG: libjpeg's own accounting of the entropy-coded data ------------------------------------
def strict_jpeg(data: bytes) -> None:
    """Refuse a JPEG whose entropy-coded data libjpeg finds corrupt (bad Huffman codes, extraneous bytes).

    Pillow silences libjpeg's warnings and decodes such files with grey or smeared blocks; OpenCV's
    libjpeg-turbo prints them on stderr, which is captured here. Decoding at 1/8 scale still reads every
    coefficient, at a fraction of the cost.
    """
    import cv2
    import numpy as np

    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        messages = capture.read(4096)
    found = _LIBJPEG_CORRUPT.search(messages)
    if found is not None:
        raise Corrupt(f"corrupt JPEG data: libjpeg says {found.group(1).decode('latin-1').strip()!r}")
    if decoded is None:
        raise Corrupt("corrupt JPEG data: libjpeg cannot decode it")


# --- images -------------------------------------------------------------------------------------
def _animation_frames(image: Any) -> Any:
    from PIL import ImageSequence

    for frame in ImageSequence.Iterator(image):
        yield frame.convert("RGB"), int(frame.info.get("duration") or 100)


def _check_image(path: Path, fmt: str, data: bytes | mmap.mmap, request: dict[str, Any]) -> dict[str, Any]:
    from PIL import Image

    max_pixels = int(request["max_pixels"])
    Image.MAX_IMAGE_PIXELS = max_pixels  # this process decodes nothing else
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    thumbnail = Path(request["thumbnail"])
    with open_image(path, fmt, max_pixels) as image:
        animated = fmt in ANIMATED_FORMATS and bool(getattr(image, "is_animated", False))
        orientation = 1 if animated else exif_orientation(image)
        upright = apply_orientation(image.convert("RGB"), orientation)
        if animated and fmt not in NATIVE_ANIMATIONS:
            converted = Path(request["converted"])
            count, total_ms = write_lossless_video(converted, _animation_frames(image))
            result = _check_video(converted, "matroska", request)
            timing = {"duration": total_ms / 1000, "fps": count * 1000 / total_ms, "bytes": path.stat().st_size}
            result["info"] = {**result["info"], **timing, "codec": fmt}
            why = f"animated {fmt.upper()} ({count} frames) → lossless FFV1/Matroska: FFmpeg cannot decode it"
            result["converted"] = why
            return result
    if animated:
        return _check_video(path, DEMUXERS[fmt], request)
    if fmt == "jpeg":
        strict_jpeg(data[: jpeg_end(data)])
    save_thumbnail(upright, thumbnail, int(request["thumbnail_max_side"]))
    width, height = upright.size
    info = MediaInfo(width=width, height=height, bytes=path.stat().st_size, codec=fmt)
    return {"kind": "image", "info": info.model_dump(), "orientation": orientation, "rotation": 0}


# --- videos -------------------------------------------------------------------------------------
def _first_frame(container: Any, stream: Any) -> Any:
    for count, packet in enumerate(container.demux(stream)):
        if count >= _FIRST_FRAME_PACKETS:
            break
        for frame in packet.decode():
            return frame
    for frame in stream.codec_context.decode(None):  # frames still inside a threaded decoder
        return frame
    raise Corrupt(f"no frame of the {stream.codec_context.name} stream decodes")


def _middle_frame(container: Any, stream: Any, duration: float | None) -> Any | None:
    """The first frame at or after the middle's preceding keyframe; None where the stream cannot seek."""
    import av

    if not duration or duration < 1 or stream.time_base is None:
        return None
    target = int(duration / 2 / stream.time_base) + (stream.start_time or 0)
    try:
        container.seek(target, stream=stream, backward=True)
    except av.error.FFmpegError:
        return None
    for frame in container.decode(stream):
        return frame
    return None


def _check_video(path: Path, demuxer: str, request: dict[str, Any]) -> dict[str, Any]:
    import av

    max_pixels = int(request["max_pixels"])
    try:
        with av.open(str(path), format=demuxer, metadata_errors="ignore") as container:
            if not container.streams.video:
                if container.streams.audio:
                    raise Unsupported("no video stream: an audio-only file")
                raise Corrupt(f"{path.name} demuxes as {demuxer} but holds no stream")
            stream = container.streams.video[0]
            check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels)
            info = media_info(container, path.stat().st_size)
            first = _first_frame(container, stream)
            check_pixels(first.width, first.height, max_pixels)
            frame = _middle_frame(container, stream, info.duration) or first
            rotation = int(frame.rotation or 0) if hasattr(frame, "rotation") else 0
            image = rotate_frame(frame.to_image(), rotation)
    except MediaError:
        raise
    except MemoryError:
        raise TooLarge(f"decoding {path.name} ran out of memory") from None
    except av.error.DecoderNotFoundError as exc:
        raise Unsupported(f"no decoder for the video in {path.name}: {exc}") from None
    except _av_errors() as exc:
        raise Corrupt(f"{path.name} does not decode as {demuxer}: {type(exc).__name__}: {exc}") from None
    save_thumbnail(image, Path(request["thumbnail"]), int(request["thumbnail_max_side"]))
    width, height = (first.height, first.width) if round(rotation / 90) % 2 else (first.width, first.height)
    info = info.model_copy(update={"width": width, "height": height})
    return {"kind": "video", "info": info.model_dump(), "orientation": 1, "rotation": rotation}


# --- operations ---------------------------------------------------------------------------------
def check(request: dict[str, Any]) -> dict[str, Any]:
    """Structure, decode, probe, orientation and thumbnail of one file (see :mod:`deepwatch.media.normalize`)."""
    path = Path(request["path"])
    fmt = request["format"]
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            raise Corrupt("the file is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            embedded = check_structure(data, fmt)
            if formats()[fmt].kind == "image":
                result = _check_image(path, fmt, data, request)
            else:
                result = _check_video(path, DEMUXERS[fmt], request)
    result["embedded"] = list(embedded)
    return result


def preview(request: dict[str, Any]) -> dict[str, Any]:
    """A small MP4 of the first ``max_s`` seconds of the video at ``path`` (demuxed as ``format``)."""
    import av

    from deepwatch.media.encode import write_video

    path, out = Path(request["path"]), Path(request["preview"])
    try:
        with av.open(str(path), format=DEMUXERS[request["format"]], metadata_errors="ignore") as container:
            if not container.streams.video:
                raise Unsupported("no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or PREVIEW_MAX_FPS
            fps = min(rate, PREVIEW_MAX_FPS)
            frames = preview_frames(
                container.decode(stream), max_side=int(request["max_side"]), max_s=float(request["max_s"]), fps=fps
            )
            count = write_video(out, frames, fps=fps, crf=PREVIEW_CRF)
    except MediaError:
        raise
    except _av_errors() as exc:
        raise Corrupt(f"{path.name} does not decode for a preview: {type(exc).__name__}: {exc}") from None
    if count == 0:
        raise Corrupt(f"no frame of {path.name} decodes")
    return {"preview": str(out), "frames": count, "fps": fps}


OPERATIONS = {"check": check, "preview": preview}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """One request's answer; decoding failures of every kind become a typed error answer, never an exception."""
    try:
        return {"ok": OPERATIONS[request["op"]](request)}
    except MediaError as exc:
        return {"error": type(exc).__name__, "message": str(exc)[:2000]}
    except MemoryError:
        return {"error": "TooLarge", "message": "decoding ran out of memory"}
    except Exception as exc:  # the bytes are untrusted: any other decoder failure is theirs, never a crash
        return {"error": "Corrupt", "message": f"{type(exc).__name__}: {exc}"[:2000]}


def _warm_up() -> None:
    """Import the decoders now, so that no request's time limit pays for it."""
    import av  # noqa: F401
    import numpy  # noqa: F401
    from PIL import Image

    Image.init()
    try:
        import cv2  # noqa: F401
    except ImportError:  # strict_jpeg will say so on the first JPEG
        pass


def main() -> int:
    """Serve requests from stdin, one JSON line each, until stdin closes; the first line out says "ready"."""
    out = os.fdopen(os.dup(1), "w")  # answers only: stray output, Python's or a C library's, goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _warm_up()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(handle(json.loads(line))) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
