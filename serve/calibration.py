"""`deepwatch detectors calibrate`: how each detector's scores agree with the moderators' reviews, and the Platt
parameters (``ensemble_platt``) that turn its scores into probabilities on that evidence.

A reviewed record keeps what each detector said when its media was scored (``detectors[name].p_fake``) beside
the moderator's label (fake or real; unsure says nothing), so nothing is decoded or scored again: the index is
the evidence. The ensemble applies ``sigmoid(a * logit(p) + b)`` to each detector's P(fake) before averaging the
logits (``serve.ensemble.ensemble_score``); fitting ``(a, b)`` is a one-feature logistic regression of the label
on ``logit(p)``, done as Platt did, with his smoothed targets so that a perfectly separated sample does not
drive ``a`` to infinity. All of it is pure, apart from reading the records.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepwatch.contracts import MediaRecord
from serve.ensemble import ensemble_score, logit, sigmoid
from serve.evaluation import ENSEMBLE, Summary, summarize

MIN_PER_CLASS = 10  # reviewed fakes and reals each, before a detector's parameters are fitted
FOLDS = 5  # the calibrated ensemble is judged on records held out of its fit, a fifth at a time


@dataclass(frozen=True)
class Reviewed:
    """One reviewed record's evidence: the moderator's label and what the detectors had said."""

    media_id: str
    fake: bool
    p_fake: dict[str, float]  # per detector
    score: float | None  # the ensemble's, as recorded


def reviewed_evidence(records: Iterable[MediaRecord], limit: int | None = None) -> tuple[list[Reviewed], bool]:
    """The records a moderator labelled fake or real and some detector scored, one per scoring: a near
    duplicate carries its original's scores (``duplicate_of``), so the two are one piece of evidence, under the
    original's review when both were reviewed. With ``limit``, only the first that many records are read; the
    flag says whether there were more."""
    chosen: dict[str, MediaRecord] = {}
    records = iter(records)
    for record in itertools.islice(records, limit):
        if record.review is None or record.review.label not in ("fake", "real") or not record.detectors:
            continue
        scoring = record.duplicate_of or record.media_id
        if scoring not in chosen or record.media_id == scoring:
            chosen[scoring] = record
    evidence = [
        Reviewed(r.media_id, r.review.label == "fake", {n: s.p_fake for n, s in r.detectors.items()}, r.score)
        for r in chosen.values()
        if r.review is not None
    ]
    return evidence, limit is not None and next(records, None) is not None


def fit_platt(p_fake: Sequence[float], fake: Sequence[bool], iterations: int = 100) -> tuple[float, float]:
    """``(a, b)`` maximising the likelihood of ``fake`` under ``sigmoid(a * logit(p) + b)``, with Platt's targets
    (``(n+ + 1) / (n+ + 2)`` for fakes, ``1 / (n- + 2)`` for reals). Newton's method with a halving step, as in
    Lin, Lin and Weng's note on Platt's algorithm; needs at least one of each class."""
    n_fake = sum(1 for f in fake if f)
    n_real = len(fake) - n_fake
    if n_fake == 0 or n_real == 0:
        raise ValueError("Platt scaling needs both fakes and reals")
    x = [logit(p) for p in p_fake]  # the ensemble's own: the very feature it applies (a, b) to
    hi, lo = (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2)
    t = [hi if f else lo for f in fake]

    def loss(a: float, b: float) -> float:
        total = 0.0
        for xi, ti in zip(x, t, strict=True):
            z = a * xi + b  # -[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], written so that exp never overflows
            total += (1 - ti) * z + math.log1p(math.exp(-z)) if z >= 0 else -ti * z + math.log1p(math.exp(z))
        return total

    a, b = 1.0, 0.0  # the identity: where the ensemble starts
    current = loss(a, b)
    for _ in range(iterations):
        g_a = g_b = h_aa = h_ab = h_bb = 0.0
        for xi, ti in zip(x, t, strict=True):
            p = sigmoid(a * xi + b)
            d = p - ti
            w = max(p * (1 - p), 1e-12)
            g_a += d * xi
            g_b += d
            h_aa += w * xi * xi
            h_ab += w * xi
            h_bb += w
        h_aa += 1e-12  # keeps the matrix invertible when every logit is the same
        h_bb += 1e-12
        det = h_aa * h_bb - h_ab * h_ab
        step_a = (h_bb * g_a - h_ab * g_b) / det
        step_b = (h_aa * g_b - h_ab * g_a) / det
        if abs(step_a) < 1e-9 and abs(step_b) < 1e-9:
            break
        slope = -(g_a * step_a + g_b * step_b)  # of the loss along the Newton direction: negative
        scale = 1.0
        while True:
            trial = loss(a - scale * step_a, b - scale * step_b)
            if trial < current + 1e-4 * scale * slope:
                break
            scale /= 2
            if scale < 1e-10:  # no step lowers the loss: this is the minimum, to float precision
                return a, b
        a, b, current = a - scale * step_a, b - scale * step_b, trial
    return a, b


@dataclass
class Calibration:
    reviewed: int  # records with a fake or real review and detector scores
    before: list[Summary]  # each detector's stored scores against the reviews, then the recorded ensemble
    platt: dict[str, tuple[float, float]]  # fitted, for detectors with enough of both classes
    skipped: dict[str, str] = field(default_factory=dict)  # detector -> why it was not fitted
    after: Summary | None = None  # the calibrated ensemble on records held out of its fit (cross-validated)
    truncated: bool = False  # more reviewed records were there than were read
    # the Platt parameters the settings give the ensemble now (empty: the identity for every detector), to set
    # beside the fitted ones
    in_force: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def setting(self) -> str | None:
        """The fitted parameters as the environment setting the ensemble reads; None when none was fitted."""
        if not self.platt:
            return None
        value = json.dumps({name: list(ab) for name, ab in self.platt.items()}, separators=(",", ":"))
        return f"DEEPWATCH_ENSEMBLE_PLATT='{value}'"

    def to_json(self) -> dict[str, Any]:
        return {
            "reviewed": self.reviewed,
            "summaries": {s.name: s.to_json() for s in self.before},
            "platt": {name: list(ab) for name, ab in self.platt.items()},
            "skipped": self.skipped,
            "ensemble_after": None if self.after is None else self.after.to_json(),
            "setting": self.setting,
            "in_force": {name: list(ab) for name, ab in self.in_force.items()},
            "truncated": self.truncated,
        }


def calibrate(
    evidence: Sequence[Reviewed],
    weights: Mapping[str, float] | None = None,
    min_per_class: int = MIN_PER_CLASS,
    truncated: bool = False,
    in_force: Mapping[str, tuple[float, float]] | None = None,
) -> Calibration:
    """Each detector's agreement with the reviews, its fitted Platt parameters where both classes have at
    least ``min_per_class`` records, and what the ensemble (with ``weights``) would then have said of records
    it was not fitted on (:func:`cross_validated`); ``in_force``: the parameters the settings give now."""
    names = sorted({name for item in evidence for name in item.p_fake})
    before = [summarize(n, [(e.p_fake[n], e.fake) for e in evidence if n in e.p_fake]) for n in names]
    before.append(summarize(ENSEMBLE, [(e.score, e.fake) for e in evidence if e.score is not None]))
    platt, skipped = fit_detectors(evidence, names, min_per_class)
    after = cross_validated(evidence, names, weights, min_per_class) if platt else None
    return Calibration(len(evidence), before, platt, skipped, after, truncated, dict(in_force or {}))


def fit_detectors(
    evidence: Sequence[Reviewed], names: Sequence[str], min_per_class: int
) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Platt parameters per detector with at least ``min_per_class`` reviewed fakes and reals, and why the
    others were left out."""
    platt: dict[str, tuple[float, float]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        pairs = [(e.p_fake[name], e.fake) for e in evidence if name in e.p_fake]
        fakes = sum(1 for _, f in pairs if f)
        if min(fakes, len(pairs) - fakes) < min_per_class:
            skipped[name] = f"{fakes} reviewed fakes and {len(pairs) - fakes} reals: fewer than {min_per_class} of one"
            continue
        a, b = fit_platt([p for p, _ in pairs], [f for _, f in pairs])
        platt[name] = (round(a, 6), round(b, 6))
    return platt, skipped


def cross_validated(
    evidence: Sequence[Reviewed], names: Sequence[str], weights: Mapping[str, float] | None, min_per_class: int,
    folds: int = FOLDS,
) -> Summary:
    """The calibrated ensemble on records it was not fitted on: each record is scored with parameters fitted on
    the other folds (a detector with too few reviews there keeps the identity). Folds come from the media ids,
    so the figure is the same on every run."""
    fold_of = {e.media_id: int(hashlib.sha256(e.media_id.encode()).hexdigest(), 16) % folds for e in evidence}
    scored: list[tuple[float, bool]] = []
    for fold in range(folds):
        held_out = [e for e in evidence if fold_of[e.media_id] == fold]
        if not held_out:
            continue
        platt, _ = fit_detectors([e for e in evidence if fold_of[e.media_id] != fold], names, min_per_class)
        for e in held_out:
            score = ensemble_score(e.p_fake, platt, weights)
            if score is not None:
                scored.append((score, e.fake))
    return summarize(ENSEMBLE, scored)
