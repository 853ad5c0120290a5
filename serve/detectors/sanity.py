"""`deepwatch detectors sanity`: load every detector and run it on the bundled test faces.

A detector passes when it loads and returns one finite P(fake) in [0, 1] per face (one per clip for a video
detector). Whether it tells the bundled fakes from the real faces is reported, not required: four faces say
little about a detector, and MesoNet's own weights do not separate them all (see the tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve.detectors.base import Detector
from serve.detectors.registry import Registered, load_detector

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class SanityReport:
    name: str
    model_version: str
    ok: bool
    error: str | None = None
    p_fake: dict[str, float] = field(default_factory=dict)  # per test face, "df/df00204.jpg" -> P(fake)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_version": self.model_version,
            "ok": self.ok,
            "error": self.error,
            "p_fake": self.p_fake,
            "seconds": round(self.seconds, 4),
        }


def load_test_faces(folder: Path) -> dict[str, np.ndarray]:
    """The test faces under ``folder`` (one sub-folder per label), as RGB uint8, by relative path."""
    from PIL import Image

    faces: dict[str, np.ndarray] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            with Image.open(path) as image:
                faces[path.relative_to(folder).as_posix()] = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return faces


def check(cls: type[Detector], models_dir: Path, cache_dir: Path | None) -> SanityReport:
    from serve.scoring import resize

    report = SanityReport(cls.name, cls.model_version(), ok=False)
    started = time.perf_counter()
    try:
        folder = Path(models_dir) / cls.sanity_media
        faces = load_test_faces(folder) if folder.is_dir() else {}
        if not faces:
            raise FileNotFoundError(f"no test faces in {folder} (they ship beside the weights in the models directory)")
        detector = load_detector(cls, Path(models_dir), cache_dir)
        names = list(faces)
        batch = np.stack([resize(faces[n], cls.input_size) for n in names])
        p = np.asarray(detector.predict(batch), dtype=np.float64).reshape(-1)
        expected = 1 if cls.modality == "video" else len(names)
        if p.shape != (expected,):
            raise ValueError(f"predict returned {p.shape[0]} scores for {len(names)} faces, expected {expected}")
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ValueError(f"predict returned values outside [0, 1]: {p.tolist()}")
        report.p_fake = dict(zip(names if expected > 1 else ["clip"], p.tolist(), strict=True))
        report.ok = True
    except Exception as exc:  # a sanity check reports every failure, whatever raised it
        report.error = f"{type(exc).__name__}: {exc}"
    report.seconds = time.perf_counter() - started
    return report


def run_sanity(registered: list[Registered], models_dir: Path, cache_dir: Path | None) -> list[SanityReport]:
    return [check(r.cls, models_dir, cache_dir) for r in registered]
