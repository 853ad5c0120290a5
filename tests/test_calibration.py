"""`deepwatch detectors calibrate`: Platt scaling fitted on reviewed records, and the CLI over a real SQLite index."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import Review
from deepwatch.settings import Settings, load_settings
from serve.calibration import Reviewed, calibrate, fit_platt, reviewed_evidence
from serve.ensemble import ensemble_score
from storage.index import open_index
from tests.index_support import T0, record, sighting

API_KEY = "calibrate-key-" + "k" * 16


def smoothed_gradient(a: float, b: float, p: list[float], fake: list[bool]) -> tuple[float, float]:
    """The gradient of Platt's loss, written here with numpy on its own: zero at the fit."""
    x = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    labels = np.asarray(fake)
    n_fake, n_real = int(labels.sum()), int((~labels).sum())
    target = np.where(labels, (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2))
    residual = 1 / (1 + np.exp(-(a * x + b))) - target
    return float((residual * x).sum()), float(residual.sum())


def drawn(n: int, a: float, b: float, seed: int) -> tuple[list[float], list[bool]]:
    """Scores uniform in (0.01, 0.99), each labelled fake with probability sigmoid(a * logit(p) + b)."""
    rng = random.Random(seed)
    p = [rng.uniform(0.01, 0.99) for _ in range(n)]
    fake = [rng.random() < 1 / (1 + math.exp(-(a * math.log(q / (1 - q)) + b))) for q in p]
    return p, fake


def test_platt_recovers_the_map_that_drew_the_labels() -> None:
    p, fake = drawn(20_000, 2.0, -1.0, seed=1)
    a, b = fit_platt(p, fake)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)
    g_a, g_b = smoothed_gradient(a, b, p, fake)
    assert abs(g_a) < 1e-6 and abs(g_b) < 1e-6  # the loss's minimum, not merely near the truth


def test_platt_stays_finite_on_separated_classes_and_needs_both() -> None:
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    fake = [False, False, False, True, True, True]
    a, b = fit_platt(p, fake)
    assert 0 < a < 100 and math.isfinite(b)  # the smoothed targets keep it from running off to infinity
    assert max(abs(g) for g in smoothed_gradient(a, b, p, fake)) < 1e-6
    with pytest.raises(ValueError, match="both fakes and reals"):
        fit_platt([0.2, 0.9], [True, True])


def test_calibrate_fits_what_has_evidence_and_rescores_the_ensemble() -> None:
    p_good, fake = drawn(400, 3.0, 0.5, seed=2)
    noise = random.Random(3)
    evidence = [
        Reviewed(f"m{i}", f, {"good": p, "noise": noise.uniform(0.3, 0.7), **({"rare": 0.5} if i < 5 else {})},
                 ensemble_score({"good": p, "noise": 0.5}))
        for i, (p, f) in enumerate(zip(p_good, fake, strict=True))
    ]
    found = calibrate(evidence, min_per_class=10)
    assert found.reviewed == 400
    assert [s.name for s in found.before] == ["good", "noise", "rare", "ensemble"]
    good, noise_summary = found.before[0], found.before[1]
    assert good.auc is not None and good.auc > 0.8 and noise_summary.auc is not None and 0.4 < noise_summary.auc < 0.6
    assert set(found.platt) == {"good", "noise"} and "fewer than 10" in found.skipped["rare"]
    assert found.platt["good"][0] == pytest.approx(3.0, abs=0.6)
    assert abs(found.platt["noise"][0]) < abs(found.platt["good"][0])  # an uninformative detector is damped
    assert found.after is not None and found.after.scored == 400
    assert found.after.accuracy is not None and found.before[-1].accuracy is not None
    assert found.after.accuracy >= found.before[-1].accuracy - 0.02  # calibrated, it does no worse here


def test_the_ensemble_after_is_judged_on_held_out_folds() -> None:
    p_good, fake = drawn(200, 3.0, 0.5, seed=5)
    evidence = [Reviewed(f"m{i}", f, {"good": p}, p) for i, (p, f) in enumerate(zip(p_good, fake, strict=True))]
    found = calibrate(evidence, min_per_class=10)
    assert found.after is not None and found.after.scored == 200
    backwards = calibrate(list(reversed(evidence)), min_per_class=10).after
    assert backwards is not None and backwards.to_json() == found.after.to_json()  # folds come from the ids
    # where no fold's training part has enough of each class, every held-out record keeps the identity: the
    # ensemble of one uncalibrated detector is that detector's own score
    fakes = sum(fake)
    sparse = calibrate(evidence, min_per_class=min(fakes, 200 - fakes))
    assert sparse.platt and sparse.after is not None
    assert sparse.after.to_json() == summarize_identity(evidence).to_json()


def summarize_identity(evidence: list[Reviewed]):  # type: ignore[no-untyped-def]
    from serve.evaluation import ENSEMBLE, summarize

    return summarize(ENSEMBLE, [(ensemble_score(e.p_fake), e.fake) for e in evidence])


def test_only_fake_or_real_reviews_with_scores_are_evidence() -> None:
    reviewed = lambda label: Review(label=label, reviewer="mod", at=T0)  # noqa: E731
    records = [
        record(1, detectors={"d": 0.9}, review=reviewed("fake"), score=0.9),
        record(2, detectors={"d": 0.2}, review=reviewed("real"), score=0.2),
        record(3, detectors={"d": 0.5}, review=reviewed("unsure")),
        record(4, detectors={"d": 0.5}),
        record(5, review=reviewed("fake")),  # never scored
        # a near duplicate of 1, its scores copied: the same evidence as 1, whose own review stands
        record(6, detectors={"d": 0.9}, review=reviewed("real"), score=0.9, dedup="near",
               duplicate_of=record(1).media_id),
        # a near duplicate of an original nobody reviewed: its review is the evidence for those scores
        record(7, detectors={"d": 0.7}, review=reviewed("fake"), score=0.7, dedup="near",
               duplicate_of=record(8).media_id),
        record(8, detectors={"d": 0.7}, score=0.7),
    ]
    evidence, truncated = reviewed_evidence(records)
    assert not truncated
    assert [(e.media_id, e.fake, e.p_fake, e.score) for e in evidence] == [
        (record(1).media_id, True, {"d": 0.9}, 0.9),
        (record(2).media_id, False, {"d": 0.2}, 0.2),
        (record(7).media_id, True, {"d": 0.7}, 0.7),
    ]
    backwards, _ = reviewed_evidence(reversed(records))  # the order they are read in changes nothing
    assert sorted((e.media_id, e.fake) for e in backwards) == sorted((e.media_id, e.fake) for e in evidence)


@pytest.fixture
def reviewed_index(tmp_path: Path) -> Settings:
    """60 reviewed records, half on each of two platforms, scored by a detector and by one that reads backwards,
    and an unreviewed one."""
    settings = load_settings(data_dir=tmp_path / "data", api_keys=[API_KEY])
    p, fake = drawn(60, 2.5, 0.0, seed=4)
    records = []
    for i, (q, f) in enumerate(zip(p, fake, strict=True)):
        platform = "tiktok" if i % 2 else "youtube"
        records.append(record(i, detectors={"meso4_df": q, "meso4_f2f": 1 - q}, score=q,
                              sightings=[sighting(f"https://video.example/{i}", platform=platform)],
                              review=Review(label="fake" if f else "real", reviewer="mod", at=T0)))
    records.append(record("unreviewed", detectors={"meso4_df": 0.99}, score=0.99))
    index = open_index(settings)
    index.upsert_many(records)
    index.close()
    return settings


def test_cli_calibrate_reads_the_reviews_in_the_index(
    reviewed_index: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = reviewed_index
    runner = CliRunner()
    result = runner.invoke(app, ["detectors", "calibrate", "--json", "--min-per-class", "5", "--data-dir",
                                 str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["reviewed"] == 60
    assert set(document["platt"]) == {"meso4_df", "meso4_f2f"}
    assert document["platt"]["meso4_df"][0] > 0 > document["platt"]["meso4_f2f"][0]  # one reads the other way
    assert document["summaries"]["meso4_df"]["auc"] == pytest.approx(1 - document["summaries"]["meso4_f2f"]["auc"])
    # the line it prints is a setting deepwatch takes, with the fitted values
    name, _, value = document["setting"].partition("=")
    assert name == "DEEPWATCH_ENSEMBLE_PLATT"
    monkeypatch.setenv(name, value.strip("'"))
    applied = load_settings(data_dir=tmp_path / "data")
    assert {k: list(v) for k, v in applied.ensemble_platt.items()} == document["platt"]
    assert document["in_force"] == {}  # fitted with none set
    again = runner.invoke(app, ["detectors", "calibrate", "--json", "--min-per-class", "5", "--data-dir",
                                str(settings.data_dir)])
    assert json.loads(again.stdout)["in_force"] == document["platt"]  # what the ensemble now applies
    assert json.loads(again.stdout)["platt"] == document["platt"]  # fitted on the recorded scores all the same
    monkeypatch.delenv(name)

    narrowed = runner.invoke(app, ["detectors", "calibrate", "--json", "--platform", "tiktok", "--min-per-class",
                                   "5", "--data-dir", str(settings.data_dir)])
    assert narrowed.exit_code == 0, narrowed.output
    assert json.loads(narrowed.stdout)["reviewed"] == 30

    table = runner.invoke(app, ["detectors", "calibrate", "--data-dir", str(settings.data_dir)])
    assert table.exit_code == 0, table.output
    assert "60 reviewed records" in table.output and "to use them: DEEPWATCH_ENSEMBLE_PLATT=" in table.output
    assert "in force now: none (the identity)" in table.output
    assert "not fitted" not in table.output  # the default wants 10 of each class: there are more
    bad = runner.invoke(app, ["detectors", "calibrate", "--json", "--since", "yesterday-ish", "--data-dir",
                              str(settings.data_dir)])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["fields"] == ["since"]
    assert "--since: not a time" in json.loads(bad.stdout)["error"]


def test_api_agreement_is_what_calibrate_prints(reviewed_index: Settings) -> None:
    from tests.api_support import Api

    api = Api(reviewed_index)
    api.use()
    answer = api.get("/v1/detectors/agreement", API_KEY, min_per_class=5)
    assert answer.status_code == 200, answer.text
    printed = CliRunner().invoke(app, ["detectors", "calibrate", "--json", "--min-per-class", "5", "--data-dir",
                                       str(reviewed_index.data_dir)])
    assert answer.json() == json.loads(printed.stdout)
    assert api.get("/v1/detectors/agreement", API_KEY, platform="tiktok").json()["reviewed"] == 30
    newest = api.get("/v1/detectors/agreement", API_KEY, max_records=20).json()
    assert newest["reviewed"] == 20 and newest["truncated"] is True and answer.json()["truncated"] is False
    assert api.get("/v1/detectors/agreement", API_KEY, since="soon").status_code == 422
    assert api.get("/v1/detectors/agreement", None).status_code == 401

