"""Procedural footage for the fingerprint bench: shots that pan and zoom over textured canvases with moving sprites.

A clip is a few shots. A shot is a canvas larger than the frame (a crop of an image that ships in scikit-image,
or a procedural texture), graded with a random colour field and drawn over with shapes; a virtual camera pans
and zooms across it while sprites move over the view. Everything comes from a seeded generator, so one seed
always gives the same frames, and different seeds give footage that differs the way unrelated videos do:
different structure, not just different colours (perceptual hashes work on luminance structure). Some package
pictures show faces (the astronaut, the cameraman, heads on coins), so a few sources without a composited face
still have faces in them, as real footage does.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

# Colour photographs and textures that ship inside scikit-image (no download). Greyscale ones are tinted.
PACKAGE_IMAGES = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
    "camera", "brick", "grass", "gravel", "moon", "coins", "cell", "clock", "text", "page",
)


@functools.cache
def package_images() -> tuple[np.ndarray, ...]:
    """RGB uint8 images from ``skimage.data``; empty when scikit-image is not installed (procedural shots only)."""
    try:
        import skimage.data
    except ImportError:
        return ()
    out = []
    for name in PACKAGE_IMAGES:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(image[:, :, :3].astype(np.uint8)))
    return tuple(out)


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int, channels: int = 3) -> np.ndarray:
    """Float32 ``height x width x channels`` in [0, 1]: a coarse random grid, upsampled (soft colour blobs)."""
    cy, cx = max(2, cells * height // max(height, width)), max(2, cells * width // max(height, width))
    grid = rng.random((cy, cx, channels), dtype=np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(field.reshape(height, width, channels), 0.0, 1.0)


def procedural_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float32 RGB in [0, 1] with structure at several scales; the kind (noise, stripes, tiles, cells) is random."""
    kind = int(rng.integers(4))
    if kind == 0:  # octaves of value noise
        base = sum(smooth_field(rng, height, width, int(c), 1)[:, :, 0] / (i + 1)
                   for i, c in enumerate(rng.integers(5, 40, size=3)))
    elif kind == 1:  # stripes at an angle, their phase bent by noise
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(12, 60)
        bend = smooth_field(rng, height, width, int(rng.integers(2, 6)), 1)[:, :, 0] * rng.uniform(10, 80)
        base = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle) + bend) * 2 * np.pi / period)
    elif kind == 2:  # tiles of random grey levels
        tile = int(rng.integers(16, 64))
        grid = rng.random(((height + tile - 1) // tile, (width + tile - 1) // tile), dtype=np.float32)
        base = np.kron(grid, np.ones((tile, tile), np.float32))[:height, :width]
    else:  # overlapping discs
        base = np.zeros((height, width), np.float32)
        for _ in range(int(rng.integers(20, 60))):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.circle(base, centre, int(rng.integers(8, 80)), float(rng.random()), -1)
    base = (base - base.min()) / max(float(np.ptp(base)), 1e-6)
    return np.repeat(base[:, :, None], 3, axis=2)


def image_crop(rng: np.random.Generator, image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float32 RGB in [0, 1]: a random region of ``image``, slightly rotated, resized to the canvas."""
    ih, iw = image.shape[:2]
    scale = rng.uniform(0.35, 0.8)
    ch = int(ih * scale)
    cw = min(iw, int(ch * width / height))
    y0, x0 = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = image[y0:y0 + ch, x0:x0 + cw]
    rotation = cv2.getRotationMatrix2D((cw / 2, ch / 2), rng.uniform(-12, 12), 1.15)  # zoom hides the corners
    crop = cv2.warpAffine(crop, rotation, (cw, ch), borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255


def exposed(rgb: np.ndarray, span: float = 0.6) -> np.ndarray:
    """Stretch a dim or washed-out picture until its luminance spans at least ``span`` between the 2nd and 98th
    percentiles, as a camera's exposure would: near-flat pictures hash alike, whatever they show."""
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    low, high = np.percentile(luma, [2, 98])
    if high - low >= span:
        return rgb
    mid = min(max((low + high) / 2, span / 2), 1 - span / 2)
    return np.clip((rgb - (low + high) / 2) * span / max(high - low, 1e-3) + mid, 0, 1)


def canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB uint8 canvas for one shot: a base layer, a colour grade, and static shapes drawn on it."""
    images = package_images()
    if images and rng.random() < 0.7:
        base = image_crop(rng, images[int(rng.integers(len(images)))], height, width)
    else:
        base = procedural_texture(rng, height, width)
    grade = smooth_field(rng, height, width, int(rng.integers(2, 8)))
    palette = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
    mix = rng.uniform(0.2, 0.6)
    out = base * (1 - mix) + base * grade * palette * mix * 2
    out = np.clip(out, 0, 1) ** rng.uniform(0.7, 1.4)
    out = (exposed(out) * 255).astype(np.uint8)
    scale = max(height, width) / 640  # shapes keep their share of the frame at any resolution
    for _ in range(int(rng.integers(2, 10))):  # local shapes (signs, windows, props), not frame-wide slashes
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        centre = rng.integers(0, [width, height])
        radius = rng.uniform(0.03, 0.12) * max(height, width)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 8))))
        points = (centre + radius * rng.uniform(0.5, 1, size=(len(angles), 1))
                  * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.int32)
        if rng.random() < 0.6:
            cv2.fillPoly(out, [points], colour, lineType=cv2.LINE_AA)
        else:
            cv2.polylines(out, [points], True, colour, max(1, int(rng.integers(2, 9) * scale)), cv2.LINE_AA)
    return out


@dataclass(frozen=True)
class Sprite:
    """A shape that moves (and turns) over the camera view; positions are fractions of the frame."""

    kind: int
    colour: tuple[int, int, int]
    size: float
    start: tuple[float, float]
    velocity: tuple[float, float]
    spin: float

    def draw(self, frame: np.ndarray, t: float) -> None:
        h, w = frame.shape[:2]
        # Bounce inside the frame: a triangle wave keeps the position in [0, 1].
        x, y = (abs(((s + v * t) % 2) - 1) for s, v in zip(self.start, self.velocity, strict=True))
        centre = (int(x * w), int(y * h))
        r = max(3, int(self.size * min(h, w)))
        angle = self.spin * t
        if self.kind == 0:
            cv2.circle(frame, centre, r, self.colour, -1, cv2.LINE_AA)
            cv2.circle(frame, centre, max(1, r // 2), tuple(255 - c for c in self.colour), -1, cv2.LINE_AA)
        elif self.kind == 1:
            box = cv2.boxPoints((centre, (2 * r, r), angle)).astype(np.int32)
            cv2.fillPoly(frame, [box], self.colour, cv2.LINE_AA)
        else:
            cv2.ellipse(frame, centre, (r, max(2, r // 3)), angle, 0, 360, self.colour, -1, cv2.LINE_AA)


def sprites(rng: np.random.Generator) -> list[Sprite]:
    return [
        Sprite(
            kind=int(rng.integers(3)),
            colour=tuple(int(c) for c in rng.integers(0, 256, size=3)),
            size=float(rng.uniform(0.04, 0.14)),
            start=(float(rng.random()), float(rng.random())),
            velocity=(float(rng.uniform(-0.2, 0.2)), float(rng.uniform(-0.2, 0.2))),
            spin=float(rng.uniform(-45, 45)),
        )
        for _ in range(int(rng.integers(1, 6)))
    ]


def view(canvas_hw: tuple[int, int], aspect: float, height: float, cx: float, cy: float) -> np.ndarray:
    """A view rectangle ``(x, y, w, h)`` of the frame's aspect, centred near ``(cx, cy)``, kept inside the canvas."""
    ch, cw = canvas_hw
    vw = min(cw, height * aspect)
    vh = min(ch, vw / aspect)
    vw = vh * aspect
    return np.array([np.clip(cx - vw / 2, 0, cw - vw), np.clip(cy - vh / 2, 0, ch - vh), vw, vh])


def camera_path(rng: np.random.Generator, canvas_hw: tuple[int, int], aspect: float,
                seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end views. A third of shots hold still (a tripod, a handheld drift); the rest pan gently, 2-8 %
    of the view per second, as most footage does, with a slow zoom in or out."""
    ch, cw = canvas_hw
    vh = ch * rng.uniform(0.5, 0.85)
    cx, cy = rng.uniform(0.3, 0.7) * cw, rng.uniform(0.3, 0.7) * ch
    start = view(canvas_hw, aspect, vh, cx, cy)
    angle = rng.uniform(0, 2 * np.pi)
    still = rng.random() < 0.35
    travel = rng.uniform(0.0, 0.01) if still else rng.uniform(0.02, 0.08)
    travel *= seconds * vh
    zoom = 1.0 if still else rng.uniform(0.95, 1.05) ** seconds
    end = view(canvas_hw, aspect, vh * zoom, cx + travel * np.cos(angle), cy + travel * np.sin(angle))
    return start, end


def shot(rng: np.random.Generator, width: int, height: int, count: int, fps: float) -> Iterator[np.ndarray]:
    """``count`` RGB frames of one shot: the camera moves from one view of the canvas to another."""
    board = canvas(rng, int(height * 1.8), int(width * 1.8))
    start, end = camera_path(rng, board.shape[:2], width / height, count / fps)
    moving = sprites(rng)
    for i in range(count):
        u = i / max(1, count - 1)
        u = u * u * (3 - 2 * u)  # ease in and out, like a camera operator
        x, y, vw, vh = start + (end - start) * u
        affine = np.array([[width / vw, 0, -x * width / vw], [0, height / vh, -y * height / vh]], np.float32)
        frame = cv2.warpAffine(board, affine, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for sprite in moving:
            sprite.draw(frame, i / fps)
        yield frame


def footage(seed: int, width: int, height: int, count: int, fps: float) -> Iterator[np.ndarray]:
    """``count`` RGB uint8 frames of an unrelated-to-any-other-seed clip: one to three shots, hard cuts between."""
    rng = np.random.default_rng(seed)
    shots = int(rng.integers(1, 4))
    shots = max(1, min(shots, count // max(1, int(2 * fps))))  # a shot lasts about 2 s at least
    jitter = rng.uniform(-0.25, 0.25, size=shots - 1)
    bounds = [0, *(int(count * (k + 1 + j) / shots) for k, j in enumerate(jitter)), count]
    for a, b in itertools.pairwise(bounds):
        yield from shot(rng, width, height, b - a, fps)
