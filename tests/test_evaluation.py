"""`deepwatch detectors evaluate`: labelled sets, the metrics, and a run on the real MesoNet weights."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deepwatch.cli import app
from serve.detectors.mesonet import DETECTORS
from serve.evaluation import LabelledSetError, labelled_items, roc_auc, summarize
from tests.detector_support import FACES_DIR, face_image, face_scene, weights_or_skip

runner = CliRunner()


def pairwise_auc(scores: list[float], fake: list[bool]) -> float:
    """AUC as its definition reads: over every (fake, real) pair, 1 when the fake scores higher, 1/2 on a tie."""
    pairs = [(a, b) for (a, fa), (b, fb) in itertools.product(zip(scores, fake, strict=True), repeat=2) if fa and not fb]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def test_auc_from_ranks_is_the_pairwise_chance_ties_included() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.1, 0.2, 0.5, 0.9]) if rng.random() < 0.5 else rng.random() for _ in range(n)]
        fake = [rng.random() < 0.5 for _ in range(n)]
        if all(fake) or not any(fake):
            assert roc_auc(scores, fake) is None
            continue
        assert roc_auc(scores, fake) == pytest.approx(pairwise_auc(scores, fake))
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.9], [True, False]) == 0.0


def test_a_summary_counts_each_class() -> None:
    s = summarize("d", [(0.9, True), (0.4, True), (0.2, False), (0.6, False)])
    assert (s.scored, s.fakes, s.reals) == (4, 2, 2)
    assert s.accuracy == pytest.approx(0.5)  # 0.9 fake and 0.2 real right, 0.4 fake and 0.6 real wrong
    assert s.mean_p_fake_of_fakes == pytest.approx(0.65) and s.mean_p_fake_of_reals == pytest.approx(0.4)
    assert s.auc == pytest.approx(0.75)
    empty = summarize("d", [])
    assert empty.scored == 0 and empty.auc is None and empty.accuracy is None


def picture(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (120, 90, 60)).save(path)
    return path


def test_a_set_is_an_export_manifest_or_label_folders(tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    picture(exported / "media" / "a.jpg")
    picture(exported / "media" / "b.jpg")
    picture(exported / "media" / "c.jpg")
    rows = [{"file_name": "media/a.jpg", "label": "fake"}, {"file_name": "media/b.jpg", "label": "real"},
            {"file_name": "media/c.jpg", "label": "unsure"}]
    (exported / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = labelled_items(exported)
    assert [(i.path.name, i.fake) for i in items] == [("a.jpg", True), ("b.jpg", False)]  # unsure is left out
    (exported / "faces.jsonl").write_text(json.dumps({"file_name": "media/c.jpg", "label": "real"}) + "\n")
    items = labelled_items(exported / "faces.jsonl")  # a manifest named itself: file names from its folder
    assert [(i.path, i.fake) for i in items] == [((exported / "media" / "c.jpg").resolve(), False)]

    folders = tmp_path / "folders"
    picture(folders / "real" / "r.png")
    picture(folders / "df" / "nested" / "x.jpg")
    (folders / "df" / "notes.txt").write_text("not media")
    items = labelled_items(folders)
    assert [(i.path.name, i.fake, i.subset) for i in items] == [("x.jpg", True, "df"), ("r.png", False, "real")]

    (exported / "metadata.jsonl").write_text(json.dumps({"file_name": "../folders/real/r.png", "label": "real"}))
    with pytest.raises(LabelledSetError, match="outside the set's folder"):
        labelled_items(exported)
    (exported / "metadata.jsonl").write_text(json.dumps({"file_name": "media/a.jpg", "label": "maybe"}))
    with pytest.raises(LabelledSetError, match="none of fake, real, unsure"):
        labelled_items(exported)
    with pytest.raises(LabelledSetError, match="no labelled media"):
        labelled_items(tmp_path / "folders" / "real")


def test_evaluate_compares_the_detectors_on_a_labelled_set(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls in DETECTORS:
        weights_or_skip(models_dir, cls)
    faces = models_dir / FACES_DIR
    code = runner.invoke(app, ["detectors", "evaluate", str(faces), "--aligned", "--json", "--data-dir",
                               str(tmp_path)])
    document = json.loads(code.stdout)
    assert code.exit_code == 0, document
    assert document["items"] == 4 and document["errors"] == 0
    rows = document["per_item"]
    assert sorted(r["file"] for r in rows) == ["df/df00204.jpg", "df/df01254.jpg", "real/real00240.jpg",
                                               "real/real00772.jpg"]
    for name, summary in document["summaries"].items():
        scored = [(r["p_fake"][name], r["fake"]) for r in rows if name in r["p_fake"]]
        assert summary["scored"] == len(scored) == 4 and (summary["fakes"], summary["reals"]) == (2, 2)
        assert summary["auc"] == pytest.approx(pairwise_auc(*map(list, zip(*scored, strict=True))), abs=1e-4)
    assert set(document["summaries"]) == {"meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f",
                                          "ensemble"}

    # faces found in scenes (no --aligned), an export manifest, and a broken file reported with the rest
    exported = tmp_path / "set"
    (exported / "media").mkdir(parents=True)
    for name in ("real/real00240.jpg", "df/df00204.jpg"):
        Image.fromarray(face_scene(face_image(models_dir, name))).save(exported / "media" / Path(name).name)
    (exported / "media" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a picture")
    rows = [{"file_name": "media/real00240.jpg", "label": "real"}, {"file_name": "media/df00204.jpg", "label": "fake"},
            {"file_name": "media/broken.jpg", "label": "fake"}]
    (exported / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)  # a set named relative to the working directory, as a user types it
    code = runner.invoke(app, ["detectors", "evaluate", "set", "--detectors", "meso4_df", "--json",
                               "--data-dir", str(tmp_path)])
    document = json.loads(code.stdout)
    assert code.exit_code == 0, document
    assert document["items"] == 3 and document["errors"] == 1
    broken = next(r for r in document["per_item"] if r["file"] == "media/broken.jpg")
    assert broken["error"].startswith("Corrupt") and broken["p_fake"] == {}
    assert document["summaries"]["meso4_df"]["scored"] == 2

    code = runner.invoke(app, ["detectors", "evaluate", str(tmp_path / "nowhere"), "--json"])
    assert code.exit_code == 2 and "neither a folder nor a .jsonl manifest" in json.loads(code.stdout)["error"]
