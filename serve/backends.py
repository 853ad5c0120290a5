"""Who scores for ``POST /v1/score``: the Serve deployments through their handles, or this process.

:class:`ServeBackend` runs inside the API's ingress replica: the faces deployment prepares the crops, each
detector deployment scores them (its response is passed to the detectors unresolved, so the crops go from the
faces replica to the detector replicas through Ray's object store without a detour through the ingress), and
the ensemble is a pure function here. :class:`LocalBackend` runs the same steps in-process, for the API outside
Ray (tests with FastAPI's TestClient) and for anything else without a cluster.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from deepwatch.contracts import DetectorScore
from deepwatch.settings import Settings
from serve.ensemble import EnsembleConfig
from serve.scoring import FaceCrops, ScoreResult, finish
from serve.sources import MediaSource, StoreForSources, materialize

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle


class UnknownDetectors(ValueError):
    def __init__(self, unknown: list[str], known: list[str]) -> None:
        self.unknown, self.known = unknown, known
        super().__init__(f"unknown or disabled detector(s) {', '.join(unknown)}; available: {', '.join(known)}")


class ScoringBackend(Protocol):
    def detector_names(self) -> list[str]:
        """The detectors a request may name (the enabled ones), in ensemble order."""
        ...

    async def score(self, source: MediaSource, detectors: list[str], aligned: bool) -> ScoreResult: ...


def chosen(backend: ScoringBackend, names: list[str] | None) -> list[str]:
    """The detectors a request runs: ``names`` (deduplicated, checked) or every enabled one."""
    known = backend.detector_names()
    if not names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownDetectors(unknown, known)
    return list(dict.fromkeys(names))


class LocalBackend:
    """Scores in this process with :func:`serve.scoring.score_file` (detectors loaded once per process)."""

    def __init__(self, settings: Settings) -> None:
        from serve.detectors.registry import available, select

        self.settings = settings
        self._stores = StoreForSources(settings)
        self._names = [r.cls.name for r in select(available(settings), settings.detectors or None)]

    def detector_names(self) -> list[str]:
        return list(self._names)

    async def score(self, source: MediaSource, detectors: list[str], aligned: bool) -> ScoreResult:
        return await asyncio.to_thread(self._score, source, detectors, aligned)

    def _score(self, source: MediaSource, detectors: list[str], aligned: bool) -> ScoreResult:
        from serve.detectors.registry import load_detectors
        from serve.scoring import score_file

        started = time.perf_counter()
        loaded = load_detectors(self.settings, detectors)
        with tempfile.TemporaryDirectory(prefix="dw-score-") as workdir:
            path = materialize(source, self.settings, Path(workdir), self._stores.for_source(source))
            fetched = time.perf_counter()
            result = score_file(path, self.settings, loaded, aligned=aligned)
        result.timings["source"] = fetched - started
        result.timings["total"] = time.perf_counter() - started
        return result


class ServeBackend:
    """The composed deployments: faces -> every chosen detector at once -> ensemble."""

    def __init__(
        self, faces: DeploymentHandle, detectors: dict[str, DeploymentHandle], config: EnsembleConfig
    ) -> None:
        self.faces = faces
        self.detectors = detectors
        self.config = config

    def detector_names(self) -> list[str]:
        return list(self.detectors)

    async def score(self, source: MediaSource, detectors: list[str], aligned: bool) -> ScoreResult:
        started = time.perf_counter()
        prepared = self.faces.prepare.remote(source, aligned)
        calls = {name: self.detectors[name].score.remote(prepared) for name in detectors}
        try:
            crops: FaceCrops = await prepared
        except BaseException:
            for call in calls.values():
                call.cancel()  # they would fail on the same error
            raise
        scores: dict[str, DetectorScore] = {}
        per_face: dict[str, list[float]] = {}
        timings: dict[str, float] = {}
        outcomes: list[Any] = await asyncio.gather(*calls.values())
        for name, (score, faces, elapsed) in zip(calls, outcomes, strict=True):
            per_face[name] = faces
            timings[f"detector.{name}"] = elapsed
            if score is not None:
                scores[name] = score
        result = finish(crops, scores, per_face, timings, self.config)
        result.timings["total"] = time.perf_counter() - started
        return result


def root_cause(exc: BaseException) -> BaseException:
    """The exception a replica raised, without Ray's wrapper (whose text carries the remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
