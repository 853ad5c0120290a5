"""From per-face scores to a verdict: pure functions, no I/O, no Ray (the ensemble deployment calls these).

- face scores -> frame score: the most suspicious face of the frame (one swapped face makes the frame fake);
- frame scores -> media score: the mean over the sampled frames (DeepfakeBench's video-level rule);
- detector scores -> ensemble score: a weighted mean in logit space after each detector's Platt calibration
  ``sigmoid(a * logit(p) + b)``; averaging logits lets a confident detector count for more than averaging
  probabilities would, and the identity calibration (1, 0) leaves a lone detector's score unchanged;
- ensemble score -> verdict by two thresholds; no face at all is ``no_face``, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from deepwatch.contracts import EnsembleSettings
    from deepwatch.settings import Settings

ScoreVerdict = Literal["fake", "uncertain", "real", "no_face"]
# probabilities are clipped this far from 0 and 1 before taking logits: a saturated sigmoid (float32 gives
# exactly 1.0 often enough) must not make the ensemble infinite or let one detector veto all others
EPS = 1e-7
IDENTITY: tuple[float, float] = (1.0, 0.0)


def logit(p: float) -> float:
    p = min(max(p, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    # the two branches keep exp() from overflowing for large |x|
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def calibrate(p: float, a: float = 1.0, b: float = 0.0) -> float:
    """Platt scaling of one detector's P(fake)."""
    return sigmoid(a * logit(p) + b)


def frame_score(face_scores: Iterable[float]) -> float:
    """One frame's P(fake): its most suspicious face."""
    scores = list(face_scores)
    if not scores:
        raise ValueError("a frame without faces has no score")
    return max(scores)


def media_score(frame_scores: Iterable[float]) -> float | None:
    """The media's P(fake) from one detector: the mean over frames with a face; None when there are none."""
    scores = list(frame_scores)
    return sum(scores) / len(scores) if scores else None


def ensemble_score(
    scores: Mapping[str, float],
    platt: Mapping[str, tuple[float, float]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> float | None:
    """Weighted mean of the calibrated detectors' logits, back through the sigmoid; None without scores.

    Detectors missing from ``platt`` use the identity, those missing from ``weights`` weigh 1. When every
    weight is 0 the detectors count equally (a configuration that silences all of them is a mistake, not a
    request for no answer).
    """
    if not scores:
        return None
    platt, weights = platt or {}, weights or {}
    w = {name: float(weights.get(name, 1.0)) for name in scores}
    if any(not 0 <= v < math.inf for v in w.values()):
        raise ValueError(f"ensemble weights must be finite and >= 0: {w}")
    top = max(w.values())
    # Relative to the largest: only the ratios matter, and a tiny weight (hypothesis found 5e-324)
    # times a logit would otherwise round to a different multiple of itself than the weight sum.
    w = {name: v / top for name, v in w.items()} if top > 0 else dict.fromkeys(scores, 1.0)
    total = sum(w.values())
    z = 0.0
    for name, p in scores.items():
        a, b = platt.get(name, IDENTITY)
        z += w[name] * (a * logit(p) + b)
    return sigmoid(z / total)


def face_ensemble(face_scores: Mapping[str, float], config: EnsembleConfig) -> float | None:
    """One face's ensemble of the detectors that scored it, as records keep it (to 1e-6)."""
    score = ensemble_score(face_scores, config.platt, config.weights)
    return None if score is None else round(score, 6)


def verdict(score: float | None, fake_threshold: float, real_threshold: float) -> ScoreVerdict:
    if score is None:
        return "no_face"
    if score >= fake_threshold:
        return "fake"
    if score <= real_threshold:
        return "real"
    return "uncertain"


@dataclass(frozen=True)
class EnsembleConfig:
    platt: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    fake_threshold: float = 0.7
    real_threshold: float = 0.3

    def recorded(self) -> EnsembleSettings:
        """These settings as a record keeps them beside the score and verdict they give."""
        from deepwatch.contracts import EnsembleSettings

        return EnsembleSettings(platt=dict(self.platt), weights=dict(self.weights),
                                fake_threshold=self.fake_threshold, real_threshold=self.real_threshold)

    @classmethod
    def from_settings(cls, settings: Settings) -> EnsembleConfig:
        return cls(
            platt=dict(settings.ensemble_platt),
            weights=dict(settings.ensemble_weights),
            fake_threshold=settings.verdict_fake_threshold,
            real_threshold=settings.verdict_real_threshold,
        )


def decide(detector_scores: Mapping[str, float], config: EnsembleConfig) -> tuple[float | None, ScoreVerdict]:
    """Ensemble score and verdict of a media item's per-detector P(fake) (empty: no face was found)."""
    score = ensemble_score(detector_scores, config.platt, config.weights)
    return score, verdict(score, config.fake_threshold, config.real_threshold)
