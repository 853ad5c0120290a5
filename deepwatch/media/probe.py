"""Probe a media file's duration, size, frame rate and codec with PyAV (FFmpeg in-process).

Only the container and stream headers are read, so a probe is quick; anything FFmpeg cannot open
is :class:`Corrupt`, never a crash.
"""

from __future__ import annotations

from pathlib import Path

from deepwatch.contracts import MediaInfo
from deepwatch.media.errors import Corrupt


def probe(path: Path) -> MediaInfo:
    import av

    size = path.stat().st_size
    if size == 0:
        raise Corrupt(f"{path.name} is empty")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            video = next((s for s in container.streams if s.type == "video"), None)
            duration = None
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif video is not None and video.duration is not None and video.time_base is not None:
                duration = float(video.duration * video.time_base)
            if video is None:
                return MediaInfo(duration=duration, bytes=size)
            rate = video.average_rate or video.base_rate
            return MediaInfo(
                duration=duration,
                width=video.codec_context.width or None,
                height=video.codec_context.height or None,
                fps=float(rate) if rate else None,
                bytes=size,
                codec=video.codec_context.name,
            )
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise Corrupt(f"{path.name} cannot be read as media: {exc}") from None
