"""POST /v1/score on a real local Ray Serve: the faces and detector deployments composed behind the API.

One app is deployed for the module, beside the session's default app on the same Ray (``serve_app``), with
its own settings: two detectors, a data directory whose object store the tests fill, loopback URLs allowed,
and a small upload limit. Every score is compared with the in-process ``score_file`` on the same bytes.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from deepwatch.media.encode import write_video
from deepwatch.settings import load_settings
from serve.detectors.base import Detector
from serve.scoring import ScoreResult, prepare, score_file
from storage.objects import open_object_store
from tests.detector_support import FACES_DIR, face_image, face_scene, hide_landmark_wheel

APP = "dw-score-test"
PREFIX = "/score-test"
DETECTORS = ["meso4_df", "mesoinception4_df"]
UPLOAD_LIMIT = 2 * 1024 * 1024
SCORE_KEY = "score-key-" + "a" * 16
READ_KEY = "read-key-" + "b" * 16


@pytest.fixture(scope="module")
def app(serve_app: dict[str, str], models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ray import serve

    from serve.app import build

    data_dir = tmp_path_factory.mktemp("score-app")
    overrides = {
        "data_dir": str(data_dir),
        "models_dir": str(models_dir),
        "api_keys": f"{SCORE_KEY}:score,{READ_KEY}:read",
        "detectors": ",".join(DETECTORS),
        "fetch_allow_networks": "127.0.0.0/8",
        "api_max_upload_bytes": UPLOAD_LIMIT,
        # far below any image: uploads to /v1/score under the route prefix must get the upload limit
        "api_max_request_bytes": 1024,
        "score_frames_per_video": 6,
        # beside the session's app on 2 CPUs: small reservations
        "serve_faces_num_cpus": 0.05,
        "serve_detector_num_cpus": 0.05,
        # long enough that requests sent together surely meet in one batch
        "serve_batch_wait_s": 0.05,
    }
    serve.run(build(overrides), name=APP, route_prefix=PREFIX)
    try:
        yield {"url": serve_app["url"] + PREFIX, "settings": load_settings(**overrides), "data_dir": data_dir}
    finally:
        serve.delete(APP)


def _post(app: dict[str, Any], key: str | None = SCORE_KEY, **kwargs: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.post(f"{app['url']}/v1/score", headers=headers, timeout=120, **kwargs)


def _scored(app: dict[str, Any]) -> float:
    text = httpx.get(f"{app['url']}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^deepwatch_media_scored_total\{[^}]*\} (\S+)$", text, re.M))


def _assert_same(got: dict[str, Any], want: ScoreResult) -> None:
    assert (got["media_id"], got["kind"], got["frames"], got["faces"]) == (want.media_id, want.kind, want.frames, want.faces)
    assert set(got["detectors"]) == set(want.detectors)
    for name, expected in want.detectors.items():
        assert got["detectors"][name]["p_fake"] == pytest.approx(expected.p_fake, abs=1e-5), name
        assert got["detectors"][name]["frames"] == expected.frames
        assert got["detectors"][name]["model_version"] == expected.model_version
    assert got["verdict"] == want.verdict
    if want.score is None:
        assert got["score"] is None
    else:
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
    assert {"source", "decode", "faces", "ensemble", "total"} <= set(got["timings"])
    faces, expected_faces = got["face_scores"], want.to_json()["face_scores"]
    assert len(faces) == got["faces"] == len(expected_faces)
    for face, expected_face in zip(faces, expected_faces, strict=True):
        assert (face["t"], face["frame"], face["box"]) == (expected_face["t"], expected_face["frame"], expected_face["box"])
        assert face["scores"] == pytest.approx(expected_face["scores"], abs=1e-5)
        assert face["score"] == pytest.approx(expected_face["score"], abs=1e-5)


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def test_every_request_form_scores_like_the_local_scorer(
    app: dict[str, Any], models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path, site: Any
) -> None:
    settings = app["settings"]
    both = [mesonet[n] for n in DETECTORS]
    before = _scored(app)

    # multipart upload of an aligned face crop
    face_file = models_dir / FACES_DIR / "df" / "df00204.jpg"
    r = _post(app, files={"file": ("face.jpg", face_file.read_bytes(), "image/jpeg")}, data={"aligned": "true"})
    assert r.status_code == 200, r.text
    _assert_same(r.json(), score_file(face_file, settings, both, aligned=True))

    # base64 of a picture with a face somewhere in it, one detector only
    scene = tmp_path / "scene.png"
    scene.write_bytes(_png(face_scene(face_image(models_dir))))
    body = {"image_base64": base64.b64encode(scene.read_bytes()).decode(), "detectors": ["mesoinception4_df"]}
    r = _post(app, json=body)
    assert r.status_code == 200, r.text
    _assert_same(r.json(), score_file(scene, settings, [mesonet["mesoinception4_df"]]))
    assert r.json()["faces"] == 1

    # an object the worker put in the store, by key
    data = _png(face_scene(face_image(models_dir, "real/real00772.jpg"), at=(60, 40)))
    key = f"media/ab/{'ab' * 32}.png"
    open_object_store(settings).put(key, data, content_type="image/png")
    local = tmp_path / "stored.png"
    local.write_bytes(data)
    r = _post(app, json={"object_key": key, "detectors": None, "aligned": False})
    assert r.status_code == 200, r.text
    _assert_same(r.json(), score_file(local, settings, both))

    # a video behind a URL on a loopback server (the guard admits 127.0.0.0/8 by this app's settings)
    face = face_image(models_dir, "df/df01254.jpg")
    clip = tmp_path / "clip.mp4"
    write_video(clip, [face_scene(face, size=(480, 360), at=(100 + 3 * i, 60), side=200) for i in range(30)],
                fps=10.0, gop=10)
    site.put("/clip.mp4", clip.read_bytes(), "video/mp4")
    r = _post(app, json={"url": f"{site.base}/clip.mp4", "detectors": ["meso4_df"]})
    assert r.status_code == 200, r.text
    got = r.json()
    _assert_same(got, score_file(clip, settings, [mesonet["meso4_df"]]))
    assert got["kind"] == "video" and got["frames"] == 6 and got["faces"] >= 1

    # a picture without a face is no_face, not a guess
    r = _post(app, files={"file": ("p.png", _png(np.full((240, 320, 3), 90, np.uint8)), "image/png")})
    assert r.status_code == 200, r.text
    assert (r.json()["verdict"], r.json()["score"], r.json()["detectors"]) == ("no_face", None, {})

    assert _scored(app) - before == 5


def test_concurrent_requests_share_detector_batches(app: dict[str, Any], models_dir: Path, mesonet: dict[str, Detector]) -> None:
    from ray import serve

    settings = app["settings"]
    files = sorted((models_dir / FACES_DIR).glob("*/*.jpg"))
    crops = [prepare(f, settings, [256], aligned=True) for f in files]
    handle = serve.get_deployment_handle("detector-meso4_df", app_name=APP)
    before = handle.stats.remote().result()
    # sent together: the replica's batch queue sees them within its wait and merges them
    responses = [handle.score.remote(c) for c in crops * 2]
    outcomes = [r.result(timeout_s=60) for r in responses]
    after = handle.stats.remote().result()
    assert after["max_requests"] > 1, after
    assert after["crops"] - before["crops"] == 2 * len(files)
    assert after["batches"] - before["batches"] < 2 * len(files)
    for c, (score, per_face, _) in zip(crops * 2, outcomes, strict=True):
        want = float(mesonet["meso4_df"].predict(c.crops[256])[0])
        assert score is not None and score.p_fake == pytest.approx(want, abs=1e-5)
        assert per_face == [pytest.approx(want, abs=1e-5)]

    # and over HTTP: every concurrent request is answered and counted once
    before_count = _scored(app)
    body = files[0].read_bytes()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _post(app, files={"file": ("f.jpg", body, "image/jpeg")},
                                                 data={"aligned": "1"}), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.json()["detectors"]["meso4_df"]["p_fake"] for a in answers}) == 1
    assert _scored(app) - before_count == 6


def test_refusals_name_the_problem(app: dict[str, Any], models_dir: Path) -> None:
    face = (models_dir / FACES_DIR / "real" / "real00240.jpg").read_bytes()
    before = _scored(app)
    assert _post(app, key=None, json={"url": "https://example.com/a.mp4"}).status_code == 401
    assert _post(app, key="wrong", json={"url": "https://example.com/a.mp4"}).status_code == 403
    assert _post(app, key=READ_KEY, json={"url": "https://example.com/a.mp4"}).status_code == 403

    def invalid(response: httpx.Response, field: str) -> None:
        assert response.status_code == 422, response.text
        assert any(field in map(str, e["loc"]) for e in response.json()["detail"]), response.text

    invalid(_post(app, json={"detectors": ["meso4_df"]}), "body")  # no source
    invalid(_post(app, json={"url": "https://example.com/a", "object_key": "media/ab/x.mp4"}), "body")
    invalid(_post(app, json={"object_key": "thumbs/abc.jpg"}), "object_key")
    invalid(_post(app, json={"object_key": "media/../etc/passwd"}), "object_key")
    invalid(_post(app, json={"url": "file:///etc/passwd"}), "url")
    invalid(_post(app, json={"image_base64": "not base64!"}), "image_base64")
    invalid(_post(app, json={"image_base64": base64.b64encode(face).decode(), "detectors": ["meso4_f2f"]}),
            "detectors")  # registered, but not enabled in this app
    invalid(_post(app, json={"image_base64": base64.b64encode(face).decode(), "verbose": True}), "verbose")
    invalid(_post(app, files={"upload": ("f.jpg", face, "image/jpeg")}), "file")
    r = httpx.post(f"{app['url']}/v1/score", content=b"hello", headers={"X-API-Key": SCORE_KEY,
                   "Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415

    big = b"\xff\xd8" + b"\0" * UPLOAD_LIMIT
    assert _post(app, files={"file": ("big.jpg", big, "image/jpeg")}).status_code == 413
    assert _post(app, json={"image_base64": base64.b64encode(big).decode()}).status_code == 413

    # permanent media problems: 422 with the error type, as the stream worker expects
    r = _post(app, files={"file": ("broken.jpg", face[: len(face) // 3], "image/jpeg")})
    assert r.status_code == 422, r.text
    assert r.json()["permanent"] is True and r.json()["error_type"] == "Corrupt"
    r = _post(app, json={"object_key": f"media/cd/{'cd' * 32}.mp4"})
    assert (r.status_code, r.json()["error_type"], r.json()["permanent"]) == (422, "NotFound", True)
    r = _post(app, json={"url": "http://10.1.2.3/clip.mp4"})
    assert (r.status_code, r.json()["error_type"]) == (422, "Blocked")
    assert _scored(app) == before  # refusals are not scorings


def test_without_ray_the_api_scores_in_process(models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serve.api import build_api
    from serve.routes_score import use_backend

    use_backend(None)  # this process is not a Serve ingress
    settings = load_settings(data_dir=tmp_path, models_dir=models_dir, api_keys=[SCORE_KEY], detectors=["meso4_f2f"])
    face_file = models_dir / FACES_DIR / "real" / "real00240.jpg"
    with TestClient(build_api(settings)) as client:
        r = client.post("/v1/score", headers={"X-API-Key": SCORE_KEY},
                        json={"image_base64": base64.b64encode(face_file.read_bytes()).decode(), "aligned": True})
    assert r.status_code == 200, r.text
    _assert_same(r.json(), score_file(face_file, settings, [mesonet["meso4_f2f"]], aligned=True))


def test_missing_landmark_weights_are_a_503_naming_the_fix(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from serve.api import build_api
    from serve.routes_score import use_backend

    hide_landmark_wheel(monkeypatch)  # and nothing pulled into the models directory
    use_backend(None)
    settings = load_settings(data_dir=tmp_path, models_dir=models_dir, api_keys=[SCORE_KEY], detectors=["meso4_f2f"])
    scene = face_scene(face_image(models_dir), size=(640, 480), at=(200, 110), side=220)
    with TestClient(build_api(settings)) as client:
        r = client.post("/v1/score", headers={"X-API-Key": SCORE_KEY}, files={"file": ("scene.png", _png(scene))})
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error_type"] == "LandmarksUnavailable" and body["permanent"] is False
    assert "deepwatch models pull" in body["detail"] and "DEEPWATCH_SCORE_ALIGN_FACES=false" in body["detail"]
