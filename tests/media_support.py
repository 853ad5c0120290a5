"""Media made in the test, good and bad: images with Pillow, videos with write_video, and the ways files go wrong."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from deepwatch.media.encode import write_video


def pattern(width: int = 160, height: int = 120, shift: int = 0) -> np.ndarray:
    """A smooth RGB pattern with a bright block at the top-left, so every orientation is distinguishable."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy + shift) % 256)], axis=-1)
    rgb[: height // 4, : width // 4] = 255
    return rgb.astype(np.uint8)


def image_bytes(fmt: str, array: np.ndarray | None = None, **options: object) -> bytes:
    """``array`` (default :func:`pattern`) saved by Pillow as ``fmt`` (a Pillow format name)."""
    buffer = io.BytesIO()
    Image.fromarray(pattern() if array is None else array).save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_with_orientation(orientation: int, array: np.ndarray | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes("JPEG", array, quality=95, exif=exif)


def animation_bytes(fmt: str, frames: int = 6, **options: object) -> bytes:
    images = [Image.fromarray(pattern(shift=40 * i)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, fmt, save_all=True, append_images=images[1:], duration=100, loop=0, **options)
    return buffer.getvalue()


def video_file(path: Path, *, frames: int = 50, fps: float = 25.0, size: tuple[int, int] = (160, 120), **options) -> Path:  # type: ignore[no-untyped-def]
    """A clip whose frame i has brightness offset i (so a frame can be told by its pixels)."""
    width, height = size
    write_video(path, (pattern(width, height, shift=5 * i) for i in range(frames)), fps=fps, **options)
    return path


def rotated_video(path: Path, degrees: int, frames: int = 10) -> Path:
    """An H.264 MP4 whose display matrix rotates it by ``degrees`` counter-clockwise."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.set_display_rotation(degrees)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", *args], check=True, timeout=60)


def faststart(source: Path, dest: Path) -> Path:
    """``source`` remuxed with its index (moov) before the media data."""
    ffmpeg("-i", str(source), "-c", "copy", "-movflags", "+faststart", str(dest))
    return dest


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid, tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.js", "alert(document.domain)")
    return buffer.getvalue()


def garbage(n: int, seed: int, *, no_ff: bool = False) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(255 if no_ff else 256) for _ in range(n))


def insert_middle(data: bytes, extra: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + extra + data[middle:]


def jpeg_with_comment(data: bytes, comment: bytes) -> bytes:
    """``data`` (a JPEG) with a COM segment holding ``comment`` right after its start marker."""
    assert len(comment) <= 0xFFFD
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def gif_js_polyglot() -> bytes:
    """The classic GIF/JavaScript polyglot: the screen width reads as ``/*`` and the script follows the trailer."""
    gif = image_bytes("GIF")
    return gif[:6] + b"/*" + gif[8:] + b"*/=alert(document.domain);"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
