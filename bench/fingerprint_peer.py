"""videohash2, the fingerprint bench's peer, run as its README shows, and the CPU clock both sides are timed by.

videohash2 finds ``ffmpeg`` on ``PATH`` and runs it in subprocesses (a duration probe, cropdetect passes, frame
extraction), so its cost is this process's CPU plus its children's: :func:`cpu_seconds` counts both, for ours too.
``ffmpeg`` comes from imageio-ffmpeg's binary, put on ``PATH`` for the bench only. Paths must be absolute.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BITS = 64
# videohash2.VideoHash.is_similar: distance <= ceil(similar_percentage / 100 * bits_in_hash), 15 % of 64 bits.
SIMILAR_PERCENTAGE = 15
THRESHOLD = math.ceil(SIMILAR_PERCENTAGE / 100 * BITS)


def cpu_seconds() -> float:
    """User + system CPU of this process (all its threads) and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def ffmpeg_on_path() -> Iterator[None]:
    """``PATH`` with an ``ffmpeg`` (imageio-ffmpeg's) in front while the block runs."""
    import imageio_ffmpeg

    saved = os.environ.get("PATH", "")
    with tempfile.TemporaryDirectory(prefix="deepwatch-bench-ffmpeg-") as tmp:
        (Path(tmp) / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        os.environ["PATH"] = f"{tmp}{os.pathsep}{saved}"
        try:
            yield
        finally:
            os.environ["PATH"] = saved


def videohash(path: Path, storage: Path) -> int:
    """videohash2's 64-bit hash of ``path``; its working files go under ``storage`` and are deleted after."""
    from videohash2 import VideoHash

    storage.mkdir(parents=True, exist_ok=True)
    vh = VideoHash(path=str(path.resolve()), storage_path=str(storage.resolve()))
    try:
        return int(vh.hash, 2)  # "0b0101..."
    finally:
        vh.delete_storage_path()


def videohash_in_worker(path: Path, storage: Path) -> int | str:
    """:func:`videohash` for a worker process (which may have started before ``PATH`` had our ``ffmpeg``); a clip
    videohash2 fails on comes back as the error's text, to be scored as unanswered."""
    with ffmpeg_on_path():
        try:
            return videohash(path, storage)
        except Exception as exc:  # the peer's failures are results too
            return f"{path.name}: {type(exc).__name__}: {exc}"


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def similar(a: int, b: int) -> bool:
    """videohash2's own verdict (``is_similar``)."""
    return distance(a, b) <= THRESHOLD
