"""`deepwatch score`, `detectors list|sanity` and `models pull`, on the real weights and a loopback mirror."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.media import landmarks
from deepwatch.media.encode import write_video
from serve.detectors.mesonet import DETECTORS
from serve.detectors.weights import FACE_LANDMARKS
from tests.detector_support import FACES_DIR, face_image, face_scene, hide_landmark_wheel, weights_or_skip
from tests.ingest_support import Site

runner = CliRunner()
NAMES = ["meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f"]


def run(argv: list[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = runner.invoke(app, argv)
    return result.exit_code, json.loads(result.stdout)


def test_detectors_list_shows_the_four_and_whether_their_weights_are_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPWATCH_MODELS_DIR", raising=False)
    code, document = run(["detectors", "list", "--json", "--data-dir", str(tmp_path)])
    assert code == 0
    rows = {row["name"]: row for row in document["detectors"]}
    assert list(rows) == NAMES
    assert rows["meso4_df"]["weights"][0] == {
        "path": "mesonet/weights/Meso4_DF.h5",
        "sha256": "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5",
        "url": "https://raw.githubusercontent.com/DariusAf/MesoNet/2144d56a30e48cdcac1976ff13a1c5cdc86376c6/weights/Meso4_DF.h5",
        "present": False,
    }
    assert rows["meso4_df"]["origin"] == "builtin" and rows["meso4_df"]["modality"] == "image"


def test_detectors_sanity_passes_on_the_real_weights(models_dir: Path, tmp_path: Path) -> None:
    for cls in DETECTORS:
        weights_or_skip(models_dir, cls)
    code, document = run(["detectors", "sanity", "--json", "--data-dir", str(tmp_path)])
    assert code == 0, document
    assert document["ok"] is True
    for report in document["detectors"]:
        assert report["ok"] and report["error"] is None
        assert sorted(report["p_fake"]) == ["df/df00204.jpg", "df/df01254.jpg", "real/real00240.jpg", "real/real00772.jpg"]
        assert all(0.0 <= p <= 1.0 for p in report["p_fake"].values())


def test_detectors_sanity_fails_readably_without_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPWATCH_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / FACES_DIR / "real").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "models" / FACES_DIR / "real" / "grey.jpg")
    code, document = run(["detectors", "sanity", "--json", "--data-dir", str(tmp_path)])
    assert code == 1 and document["ok"] is False
    for report in document["detectors"]:
        assert not report["ok"]
        assert "MissingWeights" in report["error"] and "deepwatch models pull" in report["error"]


def _mirror(site: Site, models_dir: Path) -> None:
    for cls in DETECTORS:
        weight = cls.weights[0]
        site.put(f"/mesonet/{weight.file_name}", (models_dir / weight.path).read_bytes(), "application/octet-stream")
    # the face landmark network's file, as the facenet-pytorch wheel installed it
    site.put("/mesonet/onet.pt", landmarks.weight_file().read_bytes(), "application/octet-stream")


def test_models_pull_downloads_and_verifies_then_finds_them_present(models_dir: Path, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in DETECTORS:
        weights_or_skip(models_dir, cls)
    _mirror(site, models_dir)
    target = tmp_path / "pulled"
    monkeypatch.setenv("DEEPWATCH_MODELS_DIR", str(target))
    monkeypatch.setenv("DEEPWATCH_MODELS_BASE_URL", f"{site.base}/mesonet/")
    code, document = run(["models", "pull", "--json", "--data-dir", str(tmp_path)])
    assert code == 0, document
    assert [f["status"] for f in document["files"]] == ["downloaded"] * 5
    for weight in [cls.weights[0] for cls in DETECTORS] + [FACE_LANDMARKS]:
        assert hashlib.sha256((target / weight.path).read_bytes()).hexdigest() == weight.sha256
    assert landmarks.weight_file(target) == target / landmarks.WEIGHTS_PATH  # where alignment looks first
    hits = len(site.hits)
    code, document = run(["models", "pull", "--json", "--data-dir", str(tmp_path)])
    assert code == 0 and [f["status"] for f in document["files"]] == ["present"] * 5
    assert len(site.hits) == hits  # nothing fetched again
    monkeypatch.setenv("DEEPWATCH_SCORE_ALIGN_FACES", "false")  # then the landmark network is not needed
    code, document = run(["models", "pull", "--json", "--data-dir", str(tmp_path)])
    assert code == 0 and [f["path"] for f in document["files"]] == [cls.weights[0].path for cls in DETECTORS]


def test_models_pull_refuses_a_file_with_the_wrong_sha256(models_dir: Path, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in DETECTORS:
        weights_or_skip(models_dir, cls)
    _mirror(site, models_dir)
    site.put("/mesonet/Meso4_F2F.h5", (models_dir / DETECTORS[0].weights[0].path).read_bytes())  # Meso4_DF's bytes
    del site.routes["/mesonet/MesoInception_DF.h5"]
    target = tmp_path / "pulled"
    monkeypatch.setenv("DEEPWATCH_MODELS_DIR", str(target))
    monkeypatch.setenv("DEEPWATCH_MODELS_BASE_URL", f"{site.base}/mesonet")
    code, document = run(["models", "pull", "--json", "--data-dir", str(tmp_path)])
    assert code == 1 and document["ok"] is False
    files = {f["path"]: f for f in document["files"]}
    refused = files["mesonet/weights/Meso4_F2F.h5"]
    assert refused["status"] == "failed" and "refused" in refused["error"] and DETECTORS[1].weights[0].sha256 in refused["error"]
    assert files["mesonet/weights/MesoInception_DF.h5"]["error"].startswith("HTTP 404")
    assert files["mesonet/weights/Meso4_DF.h5"]["status"] == "downloaded"
    left = sorted(p.name for p in (target / "mesonet" / "weights").iterdir())
    assert left == ["Meso4_DF.h5", "MesoInception_F2F.h5"]  # nothing half-written, nothing unverified


def test_score_an_aligned_face_prints_the_documented_json(models_dir: Path, tmp_path: Path) -> None:
    for cls in DETECTORS:
        weights_or_skip(models_dir, cls)
    path = models_dir / FACES_DIR / "real" / "real00772.jpg"
    code, document = run(["score", str(path), "--aligned", "--json", "--data-dir", str(tmp_path)])
    assert code == 0, document
    assert {"media_id", "kind", "verdict", "score", "detectors", "timings"} <= set(document)
    assert document["media_id"] == hashlib.sha256(path.read_bytes()).hexdigest() and document["kind"] == "image"
    assert list(document["detectors"]) == NAMES
    for entry in document["detectors"].values():
        assert set(entry) == {"p_fake", "model_version", "frames"} and entry["frames"] == 1
    assert document["verdict"] in ("fake", "real", "uncertain")


def test_score_a_video_with_chosen_detectors(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights_or_skip(models_dir, DETECTORS[0])
    weights_or_skip(models_dir, DETECTORS[2])
    face = face_image(models_dir, "real/real00240.jpg")
    path = tmp_path / "clip.mp4"
    write_video(path, (face_scene(face, size=(480, 360), at=(130, 70 + i), side=190) for i in range(20)), fps=10.0)
    monkeypatch.setenv("DEEPWATCH_SCORE_FRAMES_PER_VIDEO", "4")
    code, document = run(["score", str(path), "--detectors", "meso4_df,mesoinception4_df", "--json", "--data-dir", str(tmp_path)])
    assert code == 0, document
    assert document["kind"] == "video" and document["frames"] == 4
    assert list(document["detectors"]) == ["meso4_df", "mesoinception4_df"]
    assert all(1 <= d["frames"] <= 4 for d in document["detectors"].values())


def test_score_refuses_unknown_detectors_and_missing_files(tmp_path: Path) -> None:
    picture = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(picture)
    code, document = run(["score", str(picture), "--detectors", "nope", "--json", "--data-dir", str(tmp_path)])
    assert code == 2 and "unknown detector" in document["error"]
    code, document = run(["score", str(tmp_path / "absent.mp4"), "--json", "--data-dir", str(tmp_path)])
    assert code == 2 and "is not a file" in document["error"]


def test_score_without_the_landmark_weights_says_how_to_get_them(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights_or_skip(models_dir, DETECTORS[0])
    path = tmp_path / "scene.png"
    Image.fromarray(face_scene(face_image(models_dir), size=(640, 480), at=(200, 110), side=220)).save(path)
    hide_landmark_wheel(monkeypatch)  # and nothing pulled into the models directory yet
    code, document = run(["score", str(path), "--detectors", "meso4_df", "--json", "--data-dir", str(tmp_path)])
    assert code == 1 and "deepwatch models pull" in document["error"]
    code, document = run(["score", str(path), "--detectors", "meso4_df", "--aligned", "--json", "--data-dir",
                          str(tmp_path)])  # a face crop already: no landmarks needed
    assert code == 0, document
