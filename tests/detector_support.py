"""The real MesoNet weights and test faces from ``DEEPWATCH_MODELS_DIR``; tests that need them skip without them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:  # torch loads with these: only tests that use the fixtures pay for it
    from serve.detectors.base import Detector

FACES_DIR = "mesonet/test_images"


def weights_or_skip(models_dir: Path, cls: type[Detector]) -> None:
    for weight in cls.weights:
        if not (models_dir / weight.path).is_file():
            pytest.skip(f"{weight.path} is not in DEEPWATCH_MODELS_DIR={models_dir}")


def hide_landmark_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after a plain ``pip install``: the facenet-pytorch wheel, which ships the landmark weights, is not found
    (every other package still is)."""
    import importlib.util

    from deepwatch.media.landmarks import WEIGHTS_PACKAGE

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == WEIGHTS_PACKAGE else find_spec(name))


def face_files(models_dir: Path) -> list[Path]:
    files = sorted((models_dir / FACES_DIR).glob("*/*.jpg"))
    if len(files) != 4:
        pytest.skip(f"the four MesoNet test faces are not in {models_dir / FACES_DIR}")
    return files


def face_batch(models_dir: Path, side: int = 256) -> tuple[list[str], np.ndarray]:
    """The test faces as ("df/df00204.jpg", ...) and one uint8 batch, resized by Pillow (bilinear) to ``side``."""
    names, arrays = [], []
    for path in face_files(models_dir):
        names.append(f"{path.parent.name}/{path.name}")
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)))
    return names, np.stack(arrays)


@pytest.fixture(scope="session")
def mesonet(models_dir: Path) -> dict[str, Detector]:
    """The four MesoNet detectors, loaded from the real weights (no cache: converted from the HDF5 files)."""
    from serve.detectors.mesonet import DETECTORS
    from serve.detectors.registry import load_detector

    for cls in DETECTORS:
        weights_or_skip(models_dir, cls)
    return {cls.name: load_detector(cls, models_dir, None) for cls in DETECTORS}


def face_image(models_dir: Path, name: str = "real/real00240.jpg") -> np.ndarray:
    with Image.open(models_dir / FACES_DIR / name) as image:
        return np.asarray(image.convert("RGB"))


def face_scene(face: np.ndarray, *, size: tuple[int, int] = (640, 480), at: tuple[int, int] = (200, 110),
               side: int = 220) -> np.ndarray:
    """A ``size`` frame (width, height) of a muted background with ``face`` pasted at ``at``, ``side`` pixels wide:
    a face the way a face detector meets it in a picture, rather than already cut out."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    scene = np.stack([60 + xx * 60 // width, 70 + yy * 50 // height, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    pasted = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR))
    x, y = at
    scene[y : y + side, x : x + side] = pasted
    return scene


def frame_at(path: Path, t: float) -> np.ndarray:
    """The frame shown at ``t`` seconds, decoded with PyAV on its own (not through the code under test)."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= t - 1e-3:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame at {t} s")


def upright_cut(frame: np.ndarray, aligned: list[float]) -> np.ndarray:
    """The square an aligned face was scored from, turned upright: the whole frame turned about the square's
    centre (OpenCV's pixel centres sit half a pixel before the record's continuous coordinates), then cut."""
    import cv2

    x, y, side, roll = aligned
    matrix = cv2.getRotationMatrix2D((x - 0.5, y - 0.5), -roll, 1.0)  # a positive roll leans the chin right
    upright = cv2.warpAffine(frame, matrix, frame.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    half = side / 2
    return upright[round(y - half) : round(y + half), round(x - half) : round(x + half)]
