"""Write frames into a video file with PyAV (FFmpeg in-process).

One small function that three callers share: display derivatives (previews), the test-media
factories and the clip generator behind ``bench fingerprint``. Scoring never reads what this
writes: detectors see the original bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 25.0,
    codec: str = "libx264",
    crf: int | None = 23,
    bit_rate: int | None = None,
    gop: int | None = None,
    preset: str = "veryfast",
) -> int:
    """Encode RGB ``uint8`` frames (all HxWx3, even sizes for yuv420p) into ``path``; return the frame count.

    ``crf`` sets constant quality for x264; ``bit_rate`` (bits/s) overrides it when given. ``gop`` is the
    keyframe interval in frames (FFmpeg's default when ``None``).
    """
    import av

    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        options: dict[str, str] = {}
        if codec == "libx264":
            options["preset"] = preset
            if bit_rate is None and crf is not None:
                options["crf"] = str(crf)
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.options = options
        for frame_array in frames:
            if count == 0:
                height, width = frame_array.shape[:2]
                stream.width, stream.height = width, height
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_array, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count
