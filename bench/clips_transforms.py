"""The edits a re-uploader makes, as pure functions over a clip's frames (lists of RGB ``uint8`` arrays).

Each takes the frames and returns new ones, never touching its input. The lower-bitrate re-encode is not a frame
edit: it is the same frames written at a lower bit rate, so it lives in the generator as an encoding option.
Sizes stay even because H.264 in yuv420p needs even widths and heights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

Frames = list[np.ndarray]


def even(n: float) -> int:
    return max(2, round(n / 2) * 2)


def resize(frames: Sequence[np.ndarray], factor: float = 0.5) -> Frames:
    h, w = frames[0].shape[:2]
    size = (even(w * factor), even(h * factor))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def brightness(frames: Sequence[np.ndarray], factor: float) -> Frames:
    """Scale every pixel value by ``factor`` (1.2 is +20 %), clipped to the 0-255 range."""
    return [np.clip(f.astype(np.float32) * factor, 0, 255).astype(np.uint8) for f in frames]


def crop(frames: Sequence[np.ndarray], fraction: float = 0.1) -> Frames:
    """Cut ``fraction`` of the width and of the height, half from each side; the picture is not scaled back up."""
    h, w = frames[0].shape[:2]
    ch, cw = even(h * (1 - fraction)), even(w * (1 - fraction))
    y, x = (h - ch) // 2, (w - cw) // 2
    return [f[y:y + ch, x:x + cw].copy() for f in frames]


def letterbox(frames: Sequence[np.ndarray], bar_fraction: float = 0.125) -> Frames:
    """Add black bars above and below, each ``bar_fraction`` of the picture's height (rounded to even pixels)."""
    bar = even(frames[0].shape[0] * bar_fraction)
    return [cv2.copyMakeBorder(f, bar, bar, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)) for f in frames]


def hflip(frames: Sequence[np.ndarray]) -> Frames:
    return [f[:, ::-1].copy() for f in frames]


def logo(frames: Sequence[np.ndarray], text: str = "TV5") -> Frames:
    """An opaque badge with text in the top-right corner, about a sixth of the width (a channel's bug)."""
    h, w = frames[0].shape[:2]
    bw, bh = even(w / 6), even(h / 10)
    x0, y0 = w - bw - even(w / 40), even(h / 40)
    out = []
    for f in frames:
        g = f.copy()
        cv2.rectangle(g, (x0, y0), (x0 + bw, y0 + bh), (20, 40, 160), -1)
        cv2.circle(g, (x0 + bh // 2, y0 + bh // 2), max(2, bh // 3), (250, 200, 30), -1, cv2.LINE_AA)
        scale = bh / 30
        cv2.putText(g, text, (x0 + bh, y0 + int(bh * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, int(scale * 2)), cv2.LINE_AA)
        out.append(g)
    return out


def trim_start(frames: Sequence[np.ndarray], fraction: float = 0.3) -> Frames:
    """Drop the first ``fraction`` of the frames."""
    return list(frames[round(len(frames) * fraction):])


def trim_end(frames: Sequence[np.ndarray], fraction: float = 0.3) -> Frames:
    """Drop the last ``fraction`` of the frames."""
    return list(frames[:len(frames) - round(len(frames) * fraction)])


def embed(frames: Sequence[np.ndarray], before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> Frames:
    """The clip in the middle of other footage (resized to the clip's size if it differs)."""
    h, w = frames[0].shape[:2]

    def fit(f: np.ndarray) -> np.ndarray:
        return f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)

    return [fit(f) for f in before] + list(frames) + [fit(f) for f in after]


# Frame edits by the name each labelled file carries; ``bitrate`` and ``embedded`` need more than frames.
FRAME_EDITS: dict[str, Callable[[Sequence[np.ndarray]], Frames]] = {
    "resize_50": resize,
    "brighter_20": lambda f: brightness(f, 1.2),
    "darker_20": lambda f: brightness(f, 0.8),
    "crop_10": crop,
    "letterbox": letterbox,
    "hflip": hflip,
    "logo": logo,
    "trim_start_30": trim_start,
    "trim_end_30": trim_end,
}
