"""Probe a media file's duration, size, frame rate and codec with PyAV (FFmpeg in-process).

Only the container and stream headers are read, so a probe is quick; anything FFmpeg cannot open
is :class:`Corrupt`, never a crash. :func:`media_info` reads the same facts from a container that
is already open (the decode check in :mod:`deepwatch.media.decode_check` uses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepwatch.contracts import MediaInfo
from deepwatch.media.errors import Corrupt


def media_info(container: Any, size: int) -> MediaInfo:
    """Duration, size, frame rate and codec of an open ``av`` input container of ``size`` bytes."""
    import av

    video = next((s for s in container.streams if s.type == "video"), None)
    duration = None
    if container.duration is not None:
        duration = container.duration / av.time_base
    elif video is not None and video.duration is not None and video.time_base is not None:
        duration = float(video.duration * video.time_base)
    if duration is not None and duration < 0:
        duration = None
    if video is None:
        return MediaInfo(duration=duration, bytes=size)
    rate = video.average_rate or video.base_rate
    return MediaInfo(
        duration=duration,
        width=video.codec_context.width or None,
        height=video.codec_context.height or None,
        fps=float(rate) if rate and rate > 0 else None,
        bytes=size,
        codec=video.codec_context.name,
    )


def probe(path: Path) -> MediaInfo:
    import av

    size = path.stat().st_size
    if size == 0:
        raise Corrupt(f"{path.name} is empty")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return media_info(container, size)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise Corrupt(f"{path.name} cannot be read as media: {exc}") from None
