"""The scoring deployments of the Serve app, each with one job; :mod:`serve.app` composes them.

- :class:`Faces`: the media (bytes, object-store key or URL) -> decoded frames -> faces -> crops resized for
  every detector input size (:func:`serve.scoring.prepare`); the CPU-heavy step, scaled on its own.
- :class:`DetectorDeployment`: one per enabled detector. A request's crops are cut into pieces of at most
  ``serve_batch_max_crops`` and ``@serve.batch`` merges pieces of concurrent requests into one forward pass
  (batched by crop count, not by request). Resources, autoscaling and a detector's own ``runtime_env`` come
  from the settings and the detector class (:func:`detector_options`).

Both read the settings again inside the replica (environment + config file), like the API ingress, so that
secrets never travel through Ray's object store. The ensemble is a pure function run by the ingress
(:class:`serve.backends.ServeBackend`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from deepwatch.contracts import DetectorScore
from deepwatch.settings import Settings, load_settings
from serve.scoring import FaceCrops, detector_input, detector_result, landmark_weights, prepare
from serve.sources import MediaSource, StoreForSources, materialize

log = logging.getLogger(__name__)

# Requests a detector replica holds at once: enough to fill a batch from many small requests (the batch
# queue sees only requests the replica accepted); the router queues the rest.
DETECTOR_MAX_ONGOING = 64
FACES_MAX_ONGOING = 8


class DetectorUnavailable(RuntimeError):
    """A detector replica that could not load its model (its weights are missing or do not verify)."""


def _crop_count(pieces: list[np.ndarray]) -> int:
    return sum(len(p) for p in pieces)


class BatchStats:
    """What the batches of one replica looked like: tests and the benchmark read it through ``stats``."""

    def __init__(self) -> None:
        self.batches = 0
        self.crops = 0
        self.max_requests = 0  # pieces merged into one forward pass
        self.max_crops = 0
        self.busy_s = 0.0

    def record(self, pieces: int, crops: int, seconds: float) -> None:
        self.batches += 1
        self.crops += crops
        self.max_requests = max(self.max_requests, pieces)
        self.max_crops = max(self.max_crops, crops)
        self.busy_s += seconds

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@serve.deployment(max_ongoing_requests=DETECTOR_MAX_ONGOING)
class DetectorDeployment:
    def __init__(self, name: str, config: str | None, overrides: dict[str, Any]) -> None:
        import torch

        from serve.detectors.base import DetectorError
        from serve.detectors.registry import load_detectors

        settings = load_settings(config, **overrides)
        resources = resources_for(settings, name)
        threads = settings.serve_torch_threads or max(1, math.ceil(resources["num_cpus"]))
        torch.set_num_threads(threads)
        self.name = name
        self.max_crops = settings.serve_batch_max_crops
        self.stats_ = BatchStats()
        self.error: str | None = None
        self.detector: Any = None
        try:
            self.detector = load_detectors(settings, [name])[0]
        except DetectorError as exc:
            # the replica stays up and says why on every request (503), rather than crash-looping
            self.error = str(exc)
            log.error("detector %s is unavailable: %s", name, exc)
        if self.detector is not None and resources["num_gpus"] > 0 and torch.cuda.is_available():
            to_device = getattr(self.detector, "to_device", None)
            if to_device is not None:
                to_device("cuda")
        self._infer.set_max_batch_size(self.max_crops)
        self._infer.set_batch_wait_timeout_s(settings.serve_batch_wait_s)

    async def score(self, crops: FaceCrops) -> tuple[DetectorScore | None, list[float], float]:
        """This detector's media score, its per-face scores and the seconds it took."""
        started = time.perf_counter()
        if self.detector is None:
            raise DetectorUnavailable(f"detector {self.name} is unavailable: {self.error}")
        if crops.faces == 0:
            return None, [], 0.0
        batch = detector_input(crops, self.detector)
        if self.detector.modality == "video":
            # one clip is one input: merging it with another request's crops would change its meaning
            p = await asyncio.to_thread(self.detector.predict, batch)
        else:
            step = self.max_crops
            parts = await asyncio.gather(*(self._infer(batch[i : i + step]) for i in range(0, len(batch), step)))
            p = np.concatenate(parts)
        score, per_face = detector_result(self.detector, p, crops)
        return score, per_face, time.perf_counter() - started

    # Batch size and wait are set from the settings in __init__; these are placeholders.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, batch_size_fn=_crop_count)
    async def _infer(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        batch = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        # in a thread, so the replica keeps accepting requests (and filling the next batch) meanwhile
        p = np.asarray(await asyncio.to_thread(self.detector.predict, batch))
        self.stats_.record(len(pieces), len(batch), time.perf_counter() - started)
        bounds = np.cumsum([len(piece) for piece in pieces])[:-1]
        return list(np.split(p, bounds))

    def stats(self) -> dict[str, Any]:
        return {"detector": self.name, "error": self.error, **self.stats_.to_json()}


@serve.deployment(max_ongoing_requests=FACES_MAX_ONGOING)
class Faces:
    def __init__(self, sides: list[int], config: str | None, overrides: dict[str, Any]) -> None:
        from deepwatch.media.landmarks import LandmarksUnavailable

        self.settings = load_settings(config, **overrides)
        self.sides = sorted(set(sides))
        self._stores = StoreForSources(self.settings)
        try:
            landmark_weights(self.settings)
        except LandmarksUnavailable as exc:
            # the replica stays up, and each request that needs alignment answers 503 with this message
            log.error("faces cannot be aligned: %s", exc)

    async def prepare(self, source: MediaSource, aligned: bool) -> FaceCrops:
        return await asyncio.to_thread(self._prepare, source, aligned)

    def _prepare(self, source: MediaSource, aligned: bool) -> FaceCrops:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dw-faces-") as workdir:
            path = materialize(source, self.settings, Path(workdir), self._stores.for_source(source))
            fetched = time.perf_counter()
            crops = prepare(path, self.settings, self.sides, aligned)
        crops.timings = {"source": fetched - started, **crops.timings}
        return crops



# --- options from the settings ------------------------------------------------------------------------------


def resources_for(settings: Settings, name: str) -> dict[str, float]:
    """A detector's num_cpus, num_gpus, min_replicas and max_replicas: its overrides, else the defaults."""
    own = settings.serve_detector_resources.get(name, {})
    return {
        "num_cpus": own.get("num_cpus", settings.serve_detector_num_cpus),
        "num_gpus": own.get("num_gpus", settings.serve_detector_num_gpus),
        "min_replicas": own.get("min_replicas", settings.serve_min_replicas),
        "max_replicas": own.get("max_replicas", settings.serve_max_replicas),
    }


def scaling(settings: Settings, min_replicas: float, max_replicas: float) -> dict[str, Any]:
    """A fixed replica count when min == max (no autoscaler at work), else an autoscaling config."""
    low, high = int(min_replicas), max(int(max_replicas), 1)
    if low == high:
        return {"num_replicas": high}
    return {
        "autoscaling_config": {
            "min_replicas": min(low, high),
            "max_replicas": high,
            "target_ongoing_requests": settings.serve_target_ongoing_requests,
        }
    }


def detector_options(settings: Settings, name: str, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    r = resources_for(settings, name)
    actor: dict[str, Any] = {"num_cpus": r["num_cpus"], "num_gpus": r["num_gpus"]}
    if runtime_env:
        actor["runtime_env"] = runtime_env
    return {"name": f"detector-{name}", "ray_actor_options": actor,
            **scaling(settings, r["min_replicas"], r["max_replicas"])}


def faces_options(settings: Settings) -> dict[str, Any]:
    return {"name": "faces", "ray_actor_options": {"num_cpus": settings.serve_faces_num_cpus},
            **scaling(settings, settings.serve_min_replicas, settings.serve_max_replicas)}
