"""What a detector is: one class with its facts (name, version, licence, source, weights) and two methods.

In the spirit of python-threatexchange's ``SignalType``: the class attributes describe it without loading
anything (``deepwatch detectors list`` reads only those), :meth:`Detector.load` reads its weights from the
models directory, :meth:`Detector.predict` turns a batch of face crops into P(fake). No I/O beyond
``load`` and no Ray here: a Serve deployment wraps an instance, the CLI calls it directly.

A researcher adds a detector by subclassing :class:`Detector` and registering the class by entry point
(group ``deepwatch.detectors``) or by ``module:Class`` in the ``detector_plugins`` setting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from deepwatch.digest import sha256_file

Modality = Literal["image", "video"]

# The bundled test faces live beside the MesoNet weights; every image detector's sanity check runs on them.
SANITY_MEDIA = "mesonet/test_images"


class DetectorError(RuntimeError):
    """A detector cannot be found, loaded or run; the message says what to do about it."""


class MissingWeights(DetectorError):
    pass


class WeightsMismatch(DetectorError):
    pass


@dataclass(frozen=True)
class WeightFile:
    path: str  # relative to the models directory, e.g. "mesonet/weights/Meso4_DF.h5"
    sha256: str
    url: str  # where `deepwatch models pull` fetches it

    @property
    def file_name(self) -> str:
        return Path(self.path).name




def verified_weight(models_dir: Path, weight: WeightFile) -> Path:
    """The weight file's path, after checking that it is there and has the declared sha256."""
    path = Path(models_dir) / weight.path
    if not path.is_file():
        raise MissingWeights(
            f"weight file {weight.path} is missing from the models directory {models_dir} "
            f"(set DEEPWATCH_MODELS_DIR, or fetch it with `deepwatch models pull`)"
        )
    actual = sha256_file(path)
    if actual != weight.sha256:
        raise WeightsMismatch(
            f"weight file {path} has sha256 {actual}, expected {weight.sha256}: replace it with `deepwatch models pull`"
        )
    return path


class Detector(ABC):
    """One deepfake detector. Subclasses set the class attributes and implement ``load`` and ``predict``."""

    name: ClassVar[str]  # lower-case slug, unique among registered detectors
    version: ClassVar[str]
    license: ClassVar[str]
    source_url: ClassVar[str]
    modality: ClassVar[Modality] = "image"  # "video": predict gets one clip's crops in time order, returns one score
    input_size: ClassVar[int]  # side of the square RGB crops predict takes
    weights: ClassVar[tuple[WeightFile, ...]] = ()
    sanity_media: ClassVar[str] = SANITY_MEDIA  # folder under the models dir with test faces for the sanity check
    # Ray's runtime_env for this detector's Serve deployment (e.g. {"pip": ["timm==1.0.9"]}) when it needs
    # packages the others do not; None runs it in the app's own environment.
    runtime_env: ClassVar[dict[str, Any] | None] = None
    # Crops per forward pass on the CPU, for a detector that splits its batches (None: the whole batch in one).
    # Small passes keep a network's first feature maps in the CPU's caches, so the best size depends on the
    # CPU; the ``serve_cpu_pass_crops`` setting sets it for every detector (serve.detectors.registry).
    cpu_pass_crops: int | None = None

    @abstractmethod
    def load(self, models_dir: Path, cache_dir: Path | None = None) -> None:
        """Read (and verify) the weights; ``cache_dir`` may keep a converted copy for the next load."""

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: uint8 (N, input_size, input_size, 3) RGB face crops; returns float (N,) P(fake) in [0, 1]
        (for a video detector, shape (1,) for the clip)."""

    @classmethod
    def model_version(cls) -> str:
        """Name, version and the weights' hash prefix: a result names exactly which model produced it."""
        tag = "+".join(w.sha256[:12] for w in cls.weights)
        return f"{cls.name}@{cls.version}" + (f"+{tag}" if tag else "")

    @classmethod
    def describe(cls, models_dir: Path | None = None) -> dict[str, Any]:
        """The class's facts as JSON-ready data; with ``models_dir``, whether each weight file is there."""
        weights = []
        for w in cls.weights:
            entry: dict[str, Any] = {"path": w.path, "sha256": w.sha256, "url": w.url}
            if models_dir is not None:
                entry["present"] = (Path(models_dir) / w.path).is_file()
            weights.append(entry)
        return {
            "name": cls.name,
            "version": cls.version,
            "model_version": cls.model_version(),
            "license": cls.license,
            "source_url": cls.source_url,
            "modality": cls.modality,
            "input_size": cls.input_size,
            "weights": weights,
        }


def check_batch(batch: np.ndarray, side: int) -> None:
    """Refuse what predict cannot mean to get: a wrong size would silently change every score."""
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (side, side, 3):
        raise ValueError(f"expected uint8 (N, {side}, {side}, 3) RGB crops, got {batch.dtype} {batch.shape}")
