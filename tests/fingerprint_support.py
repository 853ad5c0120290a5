"""Clips for the fingerprint and matching tests: moving scenes, their edits, and scenes with real faces.

Every clip is written with ``write_video`` (H.264) into one session directory, small (320x240, 5 s) so that
the tests stay quick. Faces are the MesoNet test images in ``/work/shared``, read at test time (never copied
into the repository); tests that need them skip with the reason when they are missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepwatch.media.encode import write_video
from deepwatch.media.fingerprint import MediaFingerprint, fingerprint_file

FACES_DIR = Path(os.environ.get("DEEPWATCH_TEST_FACES_DIR", "/work/shared/models/mesonet/test_images"))
WIDTH, HEIGHT, SECONDS, FPS = 320, 240, 5.0, 25


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random colour field twice the frame's size, to pan across."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 40 + 3, width // 40 + 3, 3)).astype(np.float32)
    big = cv2.resize(small, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    return np.clip(big * 255, 0, 255).astype(np.uint8)


def scene(seed: int, width: int = WIDTH, height: int = HEIGHT, seconds: float = SECONDS, fps: int = FPS) -> list[np.ndarray]:
    """A panning texture with coloured discs moving over it: every seed its own content."""
    background = texture(seed, height, width)
    rng = np.random.default_rng(seed + 1000)
    discs = [
        (rng.random(2), rng.random(2) - 0.5, tuple(int(c) for c in rng.integers(0, 255, 3)), int(rng.integers(12, 40)))
        for _ in range(4)
    ]
    frames = []
    for i in range(int(seconds * fps)):
        t = i / fps
        ox = int((np.sin(t * 0.3 + seed) * 0.5 + 0.5) * width * 0.9)
        oy = int((np.cos(t * 0.23 + seed) * 0.5 + 0.5) * height * 0.9)
        frame = background[oy : oy + height, ox : ox + width].copy()
        for position, velocity, colour, radius in discs:
            x = int(((position[0] + velocity[0] * t * 0.2) % 1) * width)
            y = int(((position[1] + velocity[1] * t * 0.2) % 1) * height)
            cv2.circle(frame, (x, y), radius, colour, -1)
        frames.append(frame)
    return frames


def face_images() -> list[np.ndarray]:
    from PIL import Image

    paths = sorted(FACES_DIR.glob("*/*.jpg"))
    if len(paths) < 2:
        pytest.skip(f"face tests need the MesoNet test images (two or more JPEGs) under {FACES_DIR}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def with_face(frames: list[np.ndarray], face: np.ndarray, size: int = 110) -> list[np.ndarray]:
    """The face image pasted on every frame, drifting slowly, as a talking head would."""
    patch = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    out = []
    for i, frame in enumerate(frames):
        x, y = int(100 + 20 * np.sin(i / 25)), int(60 + 10 * np.cos(i / 30))
        g = frame.copy()
        g[y : y + size, x : x + size] = patch
        out.append(g)
    return out


def with_swapped_face(frames: list[np.ndarray], face: np.ndarray, donor: np.ndarray, size: int = 110) -> list[np.ndarray]:
    """As :func:`with_face`, then the inner face (an ellipse over eyes, nose and mouth) replaced by the donor's
    with Poisson blending, as a face-swap tool leaves hair, ears and background alone."""
    patch = cv2.resize(donor, (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2 + size // 20), (size * 3 // 10, size * 3 // 8), 0, 0, 360, 255, -1)
    out = []
    for i, frame in enumerate(with_face(frames, face, size)):
        x, y = int(100 + 20 * np.sin(i / 25)), int(60 + 10 * np.cos(i / 30))
        out.append(cv2.seamlessClone(patch, frame, mask, (x + size // 2, y + size // 2), cv2.NORMAL_CLONE))
    return out


def half(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in frames]


def mirrored(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(f[:, ::-1]) for f in frames]


def letterboxed(frames: list[np.ndarray]) -> list[np.ndarray]:
    bar = frames[0].shape[0] // 8 // 2 * 2
    return [cv2.copyMakeBorder(f, bar, bar, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)) for f in frames]


def cropped(frames: list[np.ndarray], fraction: float = 0.1) -> list[np.ndarray]:
    """The centre, ``fraction`` of each side cut (half from each edge), not scaled back up."""
    h, w = frames[0].shape[:2]
    ch, cw = round(h * (1 - fraction) / 2) * 2, round(w * (1 - fraction) / 2) * 2
    y, x = (h - ch) // 2, (w - cw) // 2
    return [f[y : y + ch, x : x + cw].copy() for f in frames]


@dataclass
class Clips:
    directory: Path
    made: dict[str, Path] = field(default_factory=dict)
    fingerprints: dict[Path, MediaFingerprint] = field(default_factory=dict)

    def fingerprint(self, path: Path) -> MediaFingerprint:
        if path not in self.fingerprints:
            self.fingerprints[path] = fingerprint_file(path)
        return self.fingerprints[path]

    def get(self, name: str, make: Callable[[], list[np.ndarray]], **encoding: object) -> Path:
        if name not in self.made:
            path = self.directory / f"{name}.mp4"
            write_video(path, make(), fps=FPS, **encoding)  # type: ignore[arg-type]
            self.made[name] = path
        return self.made[name]


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clips]:
    """Clips made on first use and shared by every test of the session."""
    yield Clips(tmp_path_factory.mktemp("fingerprint-clips"))
