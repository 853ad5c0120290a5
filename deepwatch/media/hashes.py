"""Perceptual hashes of one picture (a frame or a face crop) and their distances.

- PDQ (Meta's 256-bit hash, via ``pdqhash``): precise; what the index searches. Its hex follows the
  reference implementation: bit ``k`` of the hash is bit ``k`` of the number the 64 hex digits spell.
- pHash (64 bits, ImageHash's ``phash`` but for the resize): coarse, so it still matches when the same scene
  is sampled a few tenths of a second apart in two copies (PDQ is near random by then on moving pictures); the
  matcher uses it only where the times of many frames agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# an edge row or column is black border when at most this share of its pixels is brighter than BORDER_LUMA
BORDER_LUMA = 40
BORDER_BRIGHT_SHARE = 0.02
MIN_CONTENT_SHARE = 0.4  # trimming that would leave less than this of a side is not a border but a dark picture


@dataclass(frozen=True)
class PdqPair:
    pdq: str
    mirrored: str  # of the left-right mirror image, so that a flipped copy can be matched
    quality: int


def bits_to_hex(bits: np.ndarray) -> str:
    value = int.from_bytes(np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="little").tobytes(), "little")
    return f"{value:0{len(bits) // 4}x}"


def grey(rgb: np.ndarray) -> np.ndarray:
    """Pillow's ``L`` (ITU-R 601-2 luma, rounded) of an RGB picture, as ImageHash computes it; a grey picture
    (2-D) is returned as it is, so that callers convert a frame once for all of its hashes.

    Pillow's own integer formula, in numpy: the same value for every one of the 2**24 colours (tested), in half
    the time of a round trip through a Pillow image for a frame this small.
    """
    if rgb.ndim == 2:
        return rgb
    luma = rgb[..., 0].astype(np.uint32) * 19595
    luma += rgb[..., 1].astype(np.uint32) * 38470
    luma += rgb[..., 2].astype(np.uint32) * 7471
    luma += 0x8000
    return (luma >> 16).astype(np.uint8)


def phash_pair(picture: np.ndarray) -> tuple[str, str]:
    """ImageHash's pHash (8x8 of the DCT of a 32x32 grey image) of the picture (RGB, or grey from
    :func:`grey`) and of its mirror image, as 16 hex digits each. The mirror's is taken from the mirrored
    32x32 image, which saves a second resize and may differ from ``phash(mirror(picture))`` by a bit or two.

    The 32x32 image is area-averaged by OpenCV where ImageHash has Pillow's Lanczos filter: on the 61 frames
    of a 60 s clip 0.6 bits of 64 from ImageHash's hash on average and 2 at most, for a quarter of the time.
    """
    import cv2

    small = cv2.resize(np.ascontiguousarray(grey(picture)), (32, 32), interpolation=cv2.INTER_AREA)
    pixels = small.astype(np.float64)
    return _phash_hex(pixels), _phash_hex(pixels[:, ::-1])


def phash(picture: np.ndarray) -> str:
    return phash_pair(picture)[0]


# the 8 lowest rows of the unnormalised DCT-II of 32 samples, scipy.fftpack.dct's, which ImageHash applies to both
# axes of the 32x32 picture before keeping the 8x8 lowest frequencies: two small products give those directly
_DCT_LOW = 2 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32)[None, :] + 1) / 64)


def _phash_hex(pixels: np.ndarray) -> str:
    low = _DCT_LOW @ pixels @ _DCT_LOW.T
    # ImageHash's order: the first bit is the highest
    return np.packbits(low > np.median(low)).tobytes().hex()


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes of the same length, given as hex."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths: {len(a)} and {len(b)} hex digits")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def pdq(rgb: np.ndarray) -> str:
    import pdqhash

    bits, _ = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return bits_to_hex(bits)


def pdq_pair(rgb: np.ndarray) -> PdqPair:
    """PDQ of the picture and of its left-right mirror image.

    The mirror is hashed from the mirrored pixels: pdqhash's dihedral shortcut (sign flips of the same DCT)
    differs from that by 18-30 bits of 256 on smooth pictures, because its downsampling is not symmetric.
    """
    import cv2
    import pdqhash

    pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
    bits, quality = pdqhash.compute(pixels)
    mirrored, _ = pdqhash.compute(cv2.flip(pixels, 1))  # numpy's copy of a reversed view costs 15 times more
    return PdqPair(bits_to_hex(bits), bits_to_hex(mirrored), int(quality))


def content_box(picture: np.ndarray) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of the picture (RGB, or grey from :func:`grey`) inside black borders (letterbox,
    pillarbox); the whole frame if none.

    Borders are trimmed from the edges only, so dark areas inside the picture stay; a frame that is dark
    almost everywhere keeps its size rather than being cut to a sliver.
    """
    height, width = picture.shape[:2]
    bright = grey(picture) > BORDER_LUMA
    rows = np.flatnonzero(bright.mean(axis=1) > BORDER_BRIGHT_SHARE)
    cols = np.flatnonzero(bright.mean(axis=0) > BORDER_BRIGHT_SHARE)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, width, height
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if bottom - top < MIN_CONTENT_SHARE * height or right - left < MIN_CONTENT_SHARE * width:
        return 0, 0, width, height
    return left, top, right - left, bottom - top


GRID_CELLS = 16


def luma_grid(rgb: np.ndarray, cells: int = GRID_CELLS) -> np.ndarray:
    """Mean luma of a ``cells`` x ``cells`` grid over the picture, as uint8: a scene's layout, cell by cell."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (cells, cells), interpolation=cv2.INTER_AREA)


def grid_mask(regions: list[tuple[int, int, int, int]], width: int, height: int, cells: int = GRID_CELLS) -> np.ndarray:
    """Which cells of the grid over a ``width`` x ``height`` picture the regions ``(x, y, w, h)`` touch."""
    mask = np.zeros((cells, cells), dtype=bool)
    for x, y, w, h in regions:
        left, right = int(x * cells // width), int(np.ceil((x + w) * cells / width))
        top, bottom = int(y * cells // height), int(np.ceil((y + h) * cells / height))
        mask[max(top, 0) : min(bottom, cells), max(left, 0) : min(right, cells)] = True
    return mask


def grid_similarity(a: np.ndarray, a_mask: np.ndarray, b: np.ndarray, b_mask: np.ndarray) -> float | None:
    """Pearson correlation of two luma grids over the cells neither mask covers (brightness and contrast
    changes do not move it); None when less than a third of the grid is left to compare."""
    keep = ~(a_mask | b_mask)
    if keep.sum() < keep.size / 3:
        return None
    x, y = a[keep].astype(np.float64), b[keep].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    scale = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / scale) if scale > 0 else None


def thumb_similarity(a: np.ndarray, b: np.ndarray, shift: int = 1) -> float:
    """Best Pearson correlation of two same-size grey thumbnails over shifts of up to ``shift`` pixels each
    way (a face box lands a pixel or two apart in two copies); 0 where either is flat."""
    n, m = a.shape
    best = 0.0
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            x = a[max(0, dy) : n + min(0, dy), max(0, dx) : m + min(0, dx)].astype(np.float64)
            y = b[max(0, -dy) : n + min(0, -dy), max(0, -dx) : m + min(0, -dx)].astype(np.float64)
            x, y = x - x.mean(), y - y.mean()
            scale = float(np.sqrt((x * x).sum() * (y * y).sum()))
            if scale > 0:
                best = max(best, float((x * y).sum() / scale))
    return best


def centre_crop(rgb: np.ndarray, keep: float) -> np.ndarray:
    """The centred ``keep`` share of each side."""
    height, width = rgb.shape[:2]
    h, w = max(1, round(height * keep)), max(1, round(width * keep))
    top, left = (height - h) // 2, (width - w) // 2
    return rgb[top : top + h, left : left + w]
