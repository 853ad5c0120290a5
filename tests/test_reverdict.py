"""Verdicts again from the scores records hold (serve.reverdict, ``deepwatch detectors reverdict``).

The detector scores here are made-up numbers, not any model's: what is tested is the ensemble arithmetic and
the writes, which are the same whatever produced the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import DetectorScore, MediaRecord, Review, StoredObjects
from deepwatch.settings import Settings, load_settings
from serve.ensemble import EnsembleConfig, decide
from serve.reverdict import reverdicted
from serve.scoring import Face, FaceCrops, finish
from storage import keys
from storage.index import open_index
from storage.objects import open_object_store
from stream.records import scored
from stream.scoring_client import ScoreAnswer
from tests.index_support import T0, record, sighting

IDENTITY = EnsembleConfig()
# meso4_df read as more certain, meso4_f2f as less and leaning real: enough to move verdicts both ways
CALIBRATED = EnsembleConfig(platt={"meso4_df": (3.0, 1.0), "meso4_f2f": (0.5, -1.0)}, weights={"meso4_f2f": 0.25})


def judged(n: int, scores: dict[str, float], config: EnsembleConfig = IDENTITY, **fields: object) -> MediaRecord:
    """A record as the stream writes it: ``scores`` per detector, their ensemble under ``config``."""
    score, verdict = decide(scores, config)
    return record(n, detectors=scores, score=score, verdict=verdict, ensemble=config.recorded(), **fields)


def test_a_record_scored_with_the_settings_in_force_is_left_alone() -> None:
    assert reverdicted(judged(1, {"meso4_df": 0.8, "meso4_f2f": 0.4}), IDENTITY) is None
    assert reverdicted(judged(1, {"meso4_df": 0.8}, CALIBRATED), CALIBRATED) is None


def test_a_record_from_before_settings_were_recorded_gets_them_when_they_give_its_scores() -> None:
    older = judged(1, {"meso4_df": 0.8, "meso4_f2f": 0.4}).model_copy(update={"ensemble": None})
    stamped = reverdicted(older, IDENTITY)
    assert stamped is not None and stamped.ensemble == IDENTITY.recorded()
    assert (stamped.score, stamped.verdict) == (older.score, older.verdict)


def test_only_verdicts_the_ensemble_gave_are_redone() -> None:
    assert reverdicted(record(1, verdict="no_face"), CALIBRATED) is None
    assert reverdicted(record(2, verdict="error", error="404"), CALIBRATED) is None
    assert reverdicted(record(3), CALIBRATED) is None  # not scored yet
    reviewed = judged(4, {"meso4_df": 0.6}, review=Review(label="real", reviewer="mod", at=T0))
    redone = reverdicted(reviewed, CALIBRATED)
    assert redone is not None and redone.verdict == "fake" and redone.review == reviewed.review  # the human's stays


def test_reverdicting_is_what_scoring_with_the_new_settings_gives() -> None:
    """Scored under the identity, recorded as the stream records an API answer (JSON and back), then reverdicted
    under the calibration: the same score, verdict and face scores as scoring under the calibration at once."""
    faces = [Face(i // 2, i * 0.5, (10 * i, 0, 40, 40), 0.9, np.zeros((40, 40, 3), np.uint8)) for i in range(4)]
    crops = FaceCrops.of("ab" * 32, "video", 2, faces, [16])
    scores = {"meso4_df": DetectorScore(p_fake=0.55, model_version="v", frames=2),
              "meso4_f2f": DetectorScore(p_fake=0.35, model_version="v", frames=2)}
    per_face = {"meso4_df": [0.3, 0.8, 0.5, 0.6], "meso4_f2f": [0.2, 0.5, 0.4, 0.3]}

    def as_recorded(config: EnsembleConfig) -> MediaRecord:
        answer = ScoreAnswer.model_validate_json(json.dumps(finish(crops, scores, per_face, {}, config).to_json()))
        return scored(record("ab"), answer, StoredObjects())

    before, wanted = as_recorded(IDENTITY), as_recorded(CALIBRATED)
    assert (before.verdict, wanted.verdict) == ("uncertain", "fake")
    redone = reverdicted(before, CALIBRATED)
    assert redone is not None
    assert (redone.score, redone.verdict, redone.face_scores) == (wanted.score, wanted.verdict, wanted.face_scores)
    assert redone.face_scores != before.face_scores
    assert (before.ensemble, redone.ensemble) == (IDENTITY.recorded(), CALIBRATED.recorded()) == (
        before.ensemble, wanted.ensemble)
    assert reverdicted(redone, CALIBRATED) is None


@pytest.fixture
def scored_index(tmp_path: Path) -> Settings:
    """Records scored under the identity: three whose verdicts a calibration moves, one whose score only, and two
    it must leave alone. Of the three, the first keeps its bytes under flagged/, the second has none, the third
    (number 6) keeps them under media/."""
    settings = load_settings(data_dir=tmp_path / "data")
    store = open_object_store(settings)
    moving = judged(1, {"meso4_df": 0.6, "meso4_f2f": 0.5}, sightings=[sighting("https://t.example/1", platform="tiktok")],
                    objects=StoredObjects(media=keys.flagged_key(record(1).media_id, "mp4"),
                                          result=keys.result_key(record(1).media_id)))
    store.put(moving.objects.media, b"bytes of the clip")
    store.put(moving.objects.result, moving.to_json())
    # scored while the store kept all media: its bytes under media/, as the stream leaves a non-fake's
    kept = judged(6, {"meso4_df": 0.6, "meso4_f2f": 0.5}, sightings=[sighting("https://k.example/6")],
                  objects=StoredObjects(media=keys.media_key(record(6).media_id, "mp4"),
                                        result=keys.result_key(record(6).media_id)))
    store.put(kept.objects.media, b"bytes of another clip", content_type="video/mp4")
    store.put(kept.objects.result, kept.to_json())
    records = [
        moving,
        judged(2, {"meso4_df": 0.65}, sightings=[sighting("https://y.example/2", platform="youtube")]),
        judged(3, {"meso4_df": 0.05, "meso4_f2f": 0.05}),  # real either way
        record(4, verdict="no_face"),
        record(5, verdict="error", error="HTTP 404"),
        kept,
    ]
    index = open_index(settings)
    index.upsert_many(records)
    index.close()
    return settings


def _stored_by_id(settings: Settings, media_id: str) -> MediaRecord:
    index = open_index(settings)
    try:
        found = index.get(media_id)
    finally:
        index.close()
    assert found is not None
    return found


def _stored(settings: Settings, n: int) -> MediaRecord:
    return _stored_by_id(settings, record(n).media_id)


def test_cli_reverdict_rewrites_records_and_results_once(
    scored_index: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, runner = scored_index, CliRunner()
    argv = ["detectors", "reverdict", "--json", "--data-dir", str(settings.data_dir)]
    before = {n: _stored(settings, n) for n in range(1, 7)}
    unchanged = runner.invoke(app, argv)
    assert unchanged.exit_code == 0, unchanged.output
    assert json.loads(unchanged.stdout)["changed"] == 0  # the settings they were scored with

    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_PLATT", json.dumps({k: list(v) for k, v in CALIBRATED.platt.items()}))
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_WEIGHTS", json.dumps(dict(CALIBRATED.weights)))
    dry = runner.invoke(app, [*argv, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    counted = json.loads(dry.stdout)
    assert counted.pop("trace_id").startswith("reverdict-")
    assert counted == {"examined": 4, "changed": 4, "verdicts_changed": {"uncertain -> fake": 3},
                       "fake_without_media": [record(2).media_id], "copied_to_flagged": 1, "published": 0,
                       "dry_run": True}
    assert {n: _stored(settings, n) for n in range(1, 7)} == before
    flagged = keys.flagged_key(record(6).media_id, "mp4")
    assert not open_object_store(settings).exists(flagged)

    narrowed = runner.invoke(app, [*argv, "--platform", "youtube"])
    assert narrowed.exit_code == 0, narrowed.output
    assert json.loads(narrowed.stdout)["changed"] == 1
    assert _stored(settings, 1) == before[1] and _stored(settings, 2).verdict == "fake"

    done = runner.invoke(app, argv)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["changed"] == 3 and json.loads(done.stdout)["copied_to_flagged"] == 1
    for n in (1, 2, 3):
        wanted = decide({k: s.p_fake for k, s in before[n].detectors.items()}, CALIBRATED)
        assert (_stored(settings, n).score, _stored(settings, n).verdict) == wanted
    assert _stored(settings, 3).verdict == "real" and _stored(settings, 3).score != before[3].score
    assert {n: _stored(settings, n) for n in (4, 5)} == {n: before[n] for n in (4, 5)}
    stored = open_object_store(settings)
    with stored.get(before[1].objects.result or "") as result:  # the result JSON follows the record
        assert MediaRecord.model_validate_json(result.read()).verdict == "fake"
    # newly fake with kept bytes: copied under flagged/ as the stream keeps a fake's, and the record points there
    assert _stored(settings, 6).objects.media == flagged
    with stored.get(flagged) as copy:
        assert copy.read() == b"bytes of another clip"
    assert stored.stat(flagged).content_type == "video/mp4" and stored.exists(before[6].objects.media or "")
    with stored.get(before[6].objects.result or "") as result:
        assert MediaRecord.model_validate_json(result.read()).objects.media == flagged
    assert _stored(settings, 1).objects.media == before[1].objects.media  # under flagged/ already
    assert json.loads(runner.invoke(app, argv).stdout)["changed"] == 0  # a second run finds nothing to do

    table = runner.invoke(app, ["detectors", "reverdict", "--dry-run", "--data-dir", str(settings.data_dir)])
    assert table.exit_code == 0 and "4 records with an ensemble verdict: 0 would change" in table.output
    bad = runner.invoke(app, [*argv, "--since", "whenever"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["fields"] == ["since"]


def test_cli_reverdict_publishes_the_records_whose_score_or_verdict_moved(
    scored_index: Settings, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--publish`` tells deepwatch.results (the real broker) of each record whose score or verdict moved, as the
    stream tells of media it records: a ScoredMedia keyed by media id, under the run's trace id."""
    from kafka import KafkaConsumer

    from deepwatch.contracts import TOPIC_RESULTS, ScoredMedia, parse

    settings, runner = scored_index, CliRunner()
    monkeypatch.setenv("DEEPWATCH_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_PLATT", json.dumps({k: list(v) for k, v in CALIBRATED.platt.items()}))
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_WEIGHTS", json.dumps(dict(CALIBRATED.weights)))
    argv = ["detectors", "reverdict", "--json", "--publish", "--data-dir", str(settings.data_dir)]
    done = runner.invoke(app, argv)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    # 1, 2 and 6 turned fake; 3's score moved, but it has no URL (an upload) to tell it under
    assert summary["changed"] == 4 and summary["published"] == 3

    consumer = KafkaConsumer(TOPIC_RESULTS, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=3_000)
    try:
        heard = [(m.key, parse(ScoredMedia, m.value)) for m in consumer]
    finally:
        consumer.close()
    told = {result.media_id: (key, result) for key, result in heard if result.trace_id == summary["trace_id"]}
    assert set(told) == {record(n).media_id for n in (1, 2, 6)}
    for key, result in told.values():
        stored = _stored_by_id(settings, result.media_id)
        assert key == result.media_id.encode()
        assert (result.score, result.verdict, result.detectors) == (stored.score, stored.verdict, stored.detectors)
        assert result.canonical_url == stored.sightings[0].canonical_url and result.dedup == stored.dedup

    again = runner.invoke(app, argv)  # nothing moved since: nothing told
    assert again.exit_code == 0 and json.loads(again.stdout)["published"] == 0


def test_cli_reverdict_publish_with_no_broker_changes_nothing(
    scored_index: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker is connected before anything is rewritten: one that is not there is an error, and every record
    keeps its verdict (a record rewritten but never told would be missed by a later --publish run)."""
    from deepwatch.embedded.processes import free_port

    settings, runner = scored_index, CliRunner()
    before = [_stored(settings, n) for n in (1, 2, 6)]
    port = free_port()  # bound and let go: nothing answers there
    monkeypatch.setenv("DEEPWATCH_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    monkeypatch.setenv("DEEPWATCH_KAFKA_PUBLISH_TIMEOUT_S", "1")
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_PLATT", json.dumps({k: list(v) for k, v in CALIBRATED.platt.items()}))
    monkeypatch.setenv("DEEPWATCH_ENSEMBLE_WEIGHTS", json.dumps(dict(CALIBRATED.weights)))
    argv = ["detectors", "reverdict", "--json", "--publish", "--data-dir", str(settings.data_dir)]
    failed = runner.invoke(app, argv)
    assert failed.exit_code == 1
    assert f"no Kafka broker at 127.0.0.1:{port}" in json.loads(failed.stdout)["error"]
    assert [_stored(settings, n) for n in (1, 2, 6)] == before
    # the same settings without --publish do change these records: the comparison above would see a rewrite
    assert json.loads(runner.invoke(app, [a for a in argv if a != "--publish"]).stdout)["changed"] == 4
