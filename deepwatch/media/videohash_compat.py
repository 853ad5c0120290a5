"""videohash2's 64-bit video hash, computed from frames we already decoded.

videohash2 (3.2.2, the maintained fork of videohash) runs ffmpeg up to 13 times per video in shell
commands: ``cropdetect`` at 2, 5, 10, 20, … s, then ``-vf crop -s 144x144 -r 1`` to JPEG files. From
those frames it builds a 1024 px wide collage (wavelet hash, 64 bits) and 64 tiles of the frames laid
side by side (dominant colour of each, 64 bits); the hash is the XOR of the two. This module repeats
those steps on the frames of our own decoding pass, so the hash costs no second decoding, no shell and
no temporary files.

Where we must differ: ffmpeg's ``-r 1`` keeps the frame at 0 s, the next frame, then about the first frame
at or after ``n - 1.1 - frame_duration`` s for the n-th slot (within a frame: its float rounding of times is
not modelled); we take the nearest of our own samples (near those times only when we decode more than
keyframes), we scale with another filter, and we skip the JPEG round trip of its frames. On the same frames
the hash is identical (tested); from our own frames it was 0-7 bits of 64 from videohash2's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

FRAME_SIDE = 144  # videohash2 scales every frame to 144x144, ignoring the aspect ratio
COLLAGE_WIDTH = 1024
CROPDETECT_STARTS = (2, 5, 10, 20, 40, 100, 300, 600, 1200, 2400, 7200, 14400)
CROPDETECT_LIMIT = 24  # ffmpeg's default: a row or column whose mean luma is at most this is black
CROPDETECT_ROUND = 16
# videohash2 compares the tiles' dominant colours with this fixed pattern, 16 tiles per colour
TILE_PATTERN = "r" * 16 + "g" * 16 + "b" * 16 + "l" * 16


def ffmpeg_slot_times(duration: float, frame_duration: float) -> list[float]:
    """When the frames that ``ffmpeg -r 1`` writes for a clip of ``duration`` seconds were shown.

    FFmpeg's constant-frame-rate sync writes the first frame, then the second, then for slot ``n`` the first
    frame at or after ``n - 1.1 - frame_duration`` (a frame is dropped while it is more than 1.1 output frames
    early). The last frame starts ``frame_duration`` before the end.
    """
    last = max(0.0, duration - frame_duration)
    if last <= 0:
        return [0.0]
    slots = [0.0, min(frame_duration, last)]
    n = 2
    while n - 1.1 - frame_duration <= last + 1e-9:
        slots.append(max(0.0, n - 1.1 - frame_duration))
        n += 1
    return slots


def nearest_indices(sample_times: Sequence[float], wanted: Sequence[float]) -> list[int]:
    """For each wanted time, the index of the sample shown closest to it (earlier wins a tie)."""
    times = np.asarray(sample_times, dtype=np.float64)
    return [int(np.argmin(np.abs(times - w))) for w in wanted]


def luma(rgb: np.ndarray) -> np.ndarray:
    """Limited-range BT.601 luma, the plane ffmpeg's cropdetect reads in a yuv420p video."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return 16.0 + 0.257 * r + 0.504 * g + 0.098 * b


def cropdetect_bounds(y_plane: np.ndarray, limit: float = CROPDETECT_LIMIT) -> tuple[int, int, int, int] | None:
    """First and last non-black column and row ``(x1, y1, x2, y2)`` of one luma plane; None if all black."""
    rows = np.flatnonzero(y_plane.mean(axis=1) > limit)
    cols = np.flatnonzero(y_plane.mean(axis=0) > limit)
    if rows.size == 0 or cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def cropdetect_box(x1: int, y1: int, x2: int, y2: int, rounding: int = CROPDETECT_ROUND) -> tuple[int, int, int, int]:
    """ffmpeg cropdetect's rounding of the bounds: even offsets, sides a multiple of ``rounding``, centred.

    Returns ``(x, y, w, h)``, in the same pixels as the bounds.
    """
    x = (x1 + 1) & ~1
    y = (y1 + 1) & ~1
    w = x2 - x + 1
    h = y2 - y + 1
    shrink = w % rounding
    w -= shrink
    x += (shrink // 2 + 1) & ~1
    shrink = h % rounding
    h -= shrink
    y += (shrink // 2 + 1) & ~1
    return x, y, max(w, 0), max(h, 0)


def whash_bits(collage: Image.Image) -> list[int]:
    """imagehash's wavelet hash (``whash``, Haar, 8x8) of the collage after videohash2's JPEG round trip.

    With Haar wavelets and the lowest band removed, ``whash`` compares the means of an 8x8 grid of blocks
    with their median, which numpy does in 1/15 of the time. Where block means tie at the median (black
    areas of a sparse collage), imagehash's answer rests on float rounding in its wavelet round trip, so
    those collages go to imagehash itself.
    """
    buffer = io.BytesIO()
    collage.save(buffer, format="JPEG")  # Pillow's defaults, as videohash2 saves collage.jpg
    buffer.seek(0)
    with Image.open(buffer) as reopened:
        scale = 2 ** int(math.log2(min(reopened.size)))
        grey = reopened.convert("L").resize((scale, scale), Image.Resampling.LANCZOS)
        block = scale // 8
        means = (np.asarray(grey, dtype=np.float64) / 255.0).reshape(8, block, 8, block).mean(axis=(1, 3))
        median = np.median(means)
        if np.any(np.abs(means - median) < 1e-9):
            import imagehash

            return [int(bit) for bit in imagehash.whash(reopened).hash.flatten()]
        return [int(bit) for bit in (means > median).flatten()]


def make_collage(frames: Sequence[Image.Image], width: int = COLLAGE_WIDTH) -> Image.Image:
    """videohash2's MakeCollage: frames in rows of ``round(sqrt(n))`` on black, scaled to ``width``."""
    per_row = round(math.sqrt(len(frames)))
    frame_width, frame_height = frames[0].size
    scale = width / (per_row * frame_width)
    cell_width = math.ceil(frame_width * scale)
    cell_height = math.ceil(frame_height * scale)
    rows = math.ceil(len(frames) / per_row)
    collage = Image.new("RGB", (width, math.ceil(scale * frame_height * rows)))
    for index, frame in enumerate(frames):
        cell = frame.copy()
        cell.thumbnail((cell_width, cell_height), Image.Resampling.LANCZOS)  # shrinks only, as videohash2's does
        collage.paste(cell, ((index % per_row) * cell_width, (index // per_row) * cell_height))
    return collage


def dominant_colour(small: np.ndarray) -> str:
    """imagedominantcolour's verdict for one tile, given as its 16x16 LANCZOS thumbnail (RGB): 'r', 'g', 'b',
    'l' (no channel leads) or 'n' (no clear winner).

    Where 'l' ties with another most common pixel class, the library's answer depends on Python's string
    hashing (it takes ``max`` over a set); we let 'l' win the tie.
    """
    r, g, b = (small[..., i].astype(np.int16) for i in range(3))
    counts = {
        "r": int(((r > g) & (r > b)).sum()),
        "g": int(((g > b) & (g > r)).sum()),
        "b": int(((b > r) & (b > g)).sum()),
    }
    counts["l"] = small.shape[0] * small.shape[1] - sum(counts.values())
    if counts["l"] >= max(counts["r"], counts["g"], counts["b"]):
        return "l"
    margin = int(256 * 0.10)
    for colour, others in (("r", ("g", "b")), ("g", ("b", "r")), ("b", ("r", "g"))):
        if all(counts[colour] - margin > counts[other] for other in others):
            return colour
    return "n"


def tile_thumbnails(frames: Sequence[Image.Image], side: int = 16) -> np.ndarray:
    """videohash2's 8x8 tiles of the frames laid side by side, row by row, each resized to ``side`` x ``side``
    with LANCZOS, as ``(tiles, side, side, 3)``.

    Pillow resizes in two passes, rows then columns, through an 8-bit picture, and each output pixel reads
    only its own row (then column) of the input. So the tiles are stacked one above the other for the first
    pass and laid side by side for the second: the same pixels as resizing each tile alone (tested), without
    working out the filter's weights 64 times over (they took half the time).
    """
    strip = np.concatenate([np.asarray(f, dtype=np.uint8) for f in frames], axis=1)
    height, width = strip.shape[:2]
    tile_h, tile_w = height // 8, width // 8
    tiles = [
        strip[top : top + tile_h, left : left + tile_w]
        for top in range(0, height - 8, tile_h)
        for left in range(0, width - 8, tile_w)
    ]
    count = len(tiles)
    stacked = Image.fromarray(np.ascontiguousarray(np.concatenate(tiles, axis=0)))
    narrow = np.asarray(stacked.resize((side, count * tile_h), Image.Resampling.LANCZOS))
    beside = narrow.reshape(count, tile_h, side, 3).transpose(1, 0, 2, 3).reshape(tile_h, count * side, 3)
    beside_image = Image.fromarray(np.ascontiguousarray(beside))
    short = np.asarray(beside_image.resize((count * side, side), Image.Resampling.LANCZOS))
    return short.reshape(side, count, side, 3).transpose(1, 0, 2, 3)


def tile_colours(frames: Sequence[Image.Image]) -> list[str]:
    """Dominant colours of videohash2's 8x8 tiles of the frames laid side by side, row by row."""
    return [dominant_colour(small) for small in tile_thumbnails(frames)]


def videohash_of_frames(frames: Sequence[np.ndarray]) -> str:
    """videohash2's hash of already cropped, 144x144 RGB frames (in time order), as 16 hex digits."""
    if not frames:
        raise ValueError("a videohash needs at least one frame")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    wavelet = whash_bits(make_collage(images))
    colours = tile_colours(images)
    bits = [int(colour == expected) ^ w for colour, expected, w in zip(colours, TILE_PATTERN, wavelet, strict=True)]
    return f"{int(''.join(map(str, bits)), 2):016x}"


@dataclass
class VideohashBuilder:
    """Collects what videohash2 would extract while our decoding pass runs, then computes its hash.

    Frames are kept as 144x144 squares of the whole picture (about 62 kB each) because the crop is known
    only once the frames at 2, 5, 10 … s have been seen; the crop is applied to the squares at the end.
    """

    source_width: int
    source_height: int
    times: list[float] = field(default_factory=list)
    squares: list[np.ndarray] = field(default_factory=list)
    crops: list[tuple[int, int, int, int]] = field(default_factory=list)
    _next_start: int = 0

    def add(self, t: float, rgb: np.ndarray) -> None:
        """Add one sampled frame; ``rgb`` may be downscaled from the source, with the same aspect ratio."""
        import cv2

        self.times.append(t)
        # from our 160 px render, by area averaging: on 98 clips a mean of 2.47 bits of 64 from videohash2's
        # hashes, against 2.32 with Pillow's bicubic from a 256 px render (a collage cell is 128 px and a tile
        # 16 px at the most: nothing finer counts), and far cheaper
        self.squares.append(cv2.resize(rgb, (FRAME_SIDE, FRAME_SIDE), interpolation=cv2.INTER_AREA))
        while self._next_start < len(CROPDETECT_STARTS) and t >= CROPDETECT_STARTS[self._next_start]:
            # cropdetect sees the third frame after the seek point; our sample there stands in for it
            self._next_start += 1
            bounds = cropdetect_bounds(luma(rgb))
            if bounds is not None:
                self.crops.append(self._to_source(bounds, rgb.shape[1], rgb.shape[0]))

    def _to_source(self, bounds: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
        sx, sy = self.source_width / width, self.source_height / height
        x1, y1, x2, y2 = bounds
        return cropdetect_box(
            math.floor(x1 * sx), math.floor(y1 * sy), math.ceil((x2 + 1) * sx) - 1, math.ceil((y2 + 1) * sy) - 1
        )

    def crop(self) -> tuple[int, int, int, int] | None:
        """The most frequent crop ``(x, y, w, h)`` in source pixels, as videohash2 picks it; None without one."""
        if not self.crops:
            return None
        return max(self.crops, key=self.crops.count)  # max() keeps the first of equals, like videohash2's

    def hexdigest(self, duration: float | None, frame_duration: float) -> str | None:
        if not self.squares:
            return None
        wanted = ffmpeg_slot_times(duration if duration else self.times[-1] + frame_duration, frame_duration)
        picked = [self.squares[i] for i in nearest_indices(self.times, wanted)]
        box = self.crop()
        if box is not None and box[2] > 0 and box[3] > 0:
            picked = [self._cropped(square, box) for square in picked]
        return videohash_of_frames(picked)

    def _cropped(self, square: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        x, y, w, h = box
        sx, sy = FRAME_SIDE / self.source_width, FRAME_SIDE / self.source_height
        region = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        image = Image.fromarray(square).resize((FRAME_SIDE, FRAME_SIDE), Image.Resampling.BICUBIC, box=region)
        return np.asarray(image)
