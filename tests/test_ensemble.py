"""The ensemble's math: properties over generated scores, and the verdict rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from deepwatch.settings import load_settings
from serve.ensemble import (
    EPS,
    EnsembleConfig,
    calibrate,
    decide,
    ensemble_score,
    frame_score,
    logit,
    media_score,
    sigmoid,
    verdict,
)

prob = st.floats(0.0, 1.0, allow_nan=False)
inner_prob = st.floats(EPS, 1.0 - EPS, allow_nan=False)
names = st.text("abcdefgh_", min_size=1, max_size=6)
weight = st.floats(0.0, 10.0, allow_nan=False)
platt_pair = st.tuples(st.floats(0.1, 5.0), st.floats(-3.0, 3.0))


@given(st.dictionaries(names, prob, min_size=1, max_size=6), st.dictionaries(names, weight), st.dictionaries(names, platt_pair))
def test_ensemble_is_a_probability_within_the_calibrated_scores(scores, weights, platt) -> None:  # type: ignore[no-untyped-def]
    result = ensemble_score(scores, platt, weights)
    assert result is not None and 0.0 <= result <= 1.0
    calibrated = [calibrate(p, *platt.get(n, (1.0, 0.0))) for n, p in scores.items()]
    # a weighted mean of logits lies between the smallest and largest logit
    assert min(calibrated) - 1e-9 <= result <= max(calibrated) + 1e-9


@given(inner_prob, names, weight)
@example(0.25, "_", 5e-324)  # a subnormal weight: the product with a logit rounded away from the weight sum
def test_one_detector_with_identity_calibration_returns_its_own_score(p, name, w) -> None:  # type: ignore[no-untyped-def]
    assert ensemble_score({name: p}, {}, {name: w}) == pytest.approx(p, abs=1e-9)


@given(st.dictionaries(names, inner_prob, min_size=1, max_size=5), names, inner_prob, inner_prob, st.dictionaries(names, weight))
def test_raising_one_detectors_score_never_lowers_the_ensemble(scores, name, p1, p2, weights) -> None:  # type: ignore[no-untyped-def]
    low, high = sorted((p1, p2))
    before = ensemble_score({**scores, name: low}, {}, weights)
    after = ensemble_score({**scores, name: high}, {}, weights)
    assert after is not None and before is not None and after >= before - 1e-12


@given(st.lists(inner_prob, min_size=1, max_size=5))
def test_equal_weights_and_identity_is_the_sigmoid_of_the_mean_logit(ps) -> None:  # type: ignore[no-untyped-def]
    scores = {f"d{i}": p for i, p in enumerate(ps)}
    expected = sigmoid(sum(logit(p) for p in ps) / len(ps))
    assert ensemble_score(scores) == pytest.approx(expected, abs=1e-12)


def test_weights_and_platt_parameters_act() -> None:
    scores = {"a": 0.9, "b": 0.2}
    assert ensemble_score(scores, weights={"b": 0.0}) == pytest.approx(0.9)
    assert ensemble_score(scores, weights={"a": 3.0}) > ensemble_score(scores)  # type: ignore[operator]
    # a detector known to be over-confident is pulled towards 0.5 by a < 1
    assert abs(calibrate(0.99, 0.5, 0.0) - 0.5) < abs(0.99 - 0.5)
    assert calibrate(0.5, 1.0, 1.0) == pytest.approx(sigmoid(1.0))
    # all weights zero: the detectors count equally rather than giving no answer
    assert ensemble_score(scores, weights={"a": 0.0, "b": 0.0}) == pytest.approx(ensemble_score(scores))
    with pytest.raises(ValueError):
        ensemble_score(scores, weights={"a": -1.0})
    assert ensemble_score({}) is None


@given(st.floats(-800, 800))
def test_sigmoid_does_not_overflow(x) -> None:  # type: ignore[no-untyped-def]
    assert 0.0 <= sigmoid(x) <= 1.0


def test_saturated_scores_stay_finite() -> None:
    assert math.isfinite(logit(0.0)) and math.isfinite(logit(1.0))
    assert 0.0 < ensemble_score({"a": 1.0, "b": 0.0}) < 1.0  # type: ignore[operator]


@given(st.lists(st.lists(prob, min_size=1, max_size=4), min_size=1, max_size=40))
def test_media_score_is_the_mean_of_each_frames_worst_face(frames) -> None:  # type: ignore[no-untyped-def]
    result = media_score(frame_score(f) for f in frames)
    assert result is not None
    worst = [max(f) for f in frames]
    assert min(worst) - 1e-12 <= result <= max(worst) + 1e-12
    assert result == pytest.approx(sum(worst) / len(worst))


def test_no_frames_no_score_and_no_face_verdict() -> None:
    assert media_score([]) is None
    with pytest.raises(ValueError):
        frame_score([])
    assert verdict(None, 0.7, 0.3) == "no_face"
    assert decide({}, EnsembleConfig()) == (None, "no_face")


@given(prob, st.floats(0.51, 0.99), st.floats(0.01, 0.49))
def test_verdict_follows_the_thresholds(score, fake_at, real_at) -> None:  # type: ignore[no-untyped-def]
    assume(real_at < fake_at)
    v = verdict(score, fake_at, real_at)
    assert v == ("fake" if score >= fake_at else "real" if score <= real_at else "uncertain")


def test_config_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_PLATT", '{"meso4_df": [2.0, -1.0]}')
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_WEIGHTS", '{"meso4_f2f": 0.5}')
    monkeypatch.setenv("DEEPWATCH_VERDICT_FAKE_THRESHOLD", "0.8")
    config = EnsembleConfig.from_settings(load_settings())
    assert config.platt == {"meso4_df": (2.0, -1.0)} and config.weights == {"meso4_f2f": 0.5}
    assert config.fake_threshold == 0.8 and config.real_threshold == 0.3
    assert decide({"meso4_df": 0.5}, config) == (pytest.approx(sigmoid(-1.0)), "real")  # 0.27 <= 0.3
    assert decide({"meso4_df": 0.7}, config)[1] == "uncertain"  # sigmoid(2*0.85-1) = 0.67 < 0.8


def test_thresholds_must_be_ordered() -> None:
    from deepwatch.contracts import ContractError

    with pytest.raises(ContractError, match="verdict_real_threshold"):
        load_settings(verdict_real_threshold=0.8, verdict_fake_threshold=0.6)
