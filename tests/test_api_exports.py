"""``POST /v1/exports`` and its status routes, over a real SQLite index and local object store: an export
to ``store:NAME`` runs in the background to the end, re-posting it resumes (copies nothing twice), local
paths are refused, one export runs at a time, and only ``admin`` keys may export.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from deepwatch.contracts import MediaRecord, StoredObjects
from deepwatch.settings import load_settings
from serve.routes_exports import JOBS
from storage.export import ExportRequest
from storage.index import open_index
from storage.keys import flagged_key, media_key
from storage.objects import open_object_store
from tests.api_support import Api
from tests.index_support import HOUR, T0, record, sighting
from tests.media_support import image_bytes, pattern

READER, ADMIN = "r-secret-1", "a-secret-2"
FAKES = 4


@dataclass
class Seeded:
    api: Api
    fakes: dict[str, bytes]  # media_id → bytes


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("api-exports"), api_keys=f"reader={READER}:read,root={ADMIN}")
    store = open_object_store(settings)
    fakes, records = {}, []
    for n in range(FAKES + 1):
        data = image_bytes("JPEG", pattern(48, 40, shift=11 * n + 3), quality=90)
        mid = hashlib.sha256(data).hexdigest()
        # half stored under media/ (named by the record), half only under flagged/
        key = media_key(mid, "jpg") if n % 2 else flagged_key(mid, "jpg")
        store.put(key, data)
        fake = n < FAKES
        rec = record(f"unused-{n}", sightings=[sighting(f"https://img.example/{n}", first=T0 + n * HOUR)],
                     kind="image", verdict="fake" if fake else "real", score=0.9 if fake else 0.1,
                     detectors={"mesonet": 0.9 if fake else 0.1}, first=T0 + n * HOUR)
        rec = MediaRecord.model_validate({**rec.model_dump(), "media_id": mid, "fingerprints": {"sha256": mid},
                                          "objects": StoredObjects(media=key if n % 2 else None).model_dump()})
        records.append(rec)
        if fake:
            fakes[mid] = data
    index = open_index(settings)
    index.upsert_many(records)
    index.close()
    return Seeded(Api(settings), fakes)


@pytest.fixture(autouse=True)
def api_of_this_module(seeded: Seeded) -> Iterator[None]:
    seeded.api.use()
    yield
    for job in JOBS.all():  # no test leaves a job that would make the next POST a 409
        assert job.status not in ("queued", "running"), job


def finished(api: Api, location: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(location, ADMIN).json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"the export did not finish: {job}"
        time.sleep(0.05)


def test_export_to_the_store_runs_in_the_background_and_resumes(seeded: Seeded) -> None:
    api = seeded.api
    body = {"out": "store:api-run", "query": {"kind": ["image"]}, "ratios": [0.5, 0.25, 0.25]}
    response = api.post("/v1/exports", ADMIN, body)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] in ("queued", "running", "done")
    assert started["requested_by"] == "root" and started["request"]["out"] == "store:api-run"
    assert response.headers["location"] == f"/v1/exports/{started['id']}"

    job = finished(api, response.headers["location"])
    assert job["status"] == "done", job
    summary = job["summary"]
    assert summary["items"] == FAKES and summary["copied"] == FAKES and summary["kept"] == 0
    assert summary["bytes"] == sum(len(b) for b in seeded.fakes.values())
    assert job["progress"] == {"done": FAKES, "total": FAKES, "bytes": summary["bytes"]}
    assert sum(summary["splits"].values()) == FAKES and summary["labels"] == {"fake": FAKES}
    # the files are in the object store under exports/api-run/, each holding the bytes its id names
    store = open_object_store(api.settings)
    keys = set(store.list_keys("exports/api-run/"))
    assert {"exports/api-run/metadata.parquet", "exports/api-run/README.md"} <= keys
    media = [k for k in keys if k.endswith(".jpg")]
    assert len(media) == FAKES
    for key in media:
        with store.get(key) as stream:
            data = stream.read()
        assert seeded.fakes[hashlib.sha256(data).hexdigest()] == data and key.endswith(f"{hashlib.sha256(data).hexdigest()}.jpg")

    # posting it again completes nothing new: every file is kept
    again = finished(api, api.post("/v1/exports", ADMIN, body).headers["location"])
    assert again["status"] == "done"
    assert (again["summary"]["copied"], again["summary"]["kept"], again["summary"]["items"]) == (0, FAKES, FAKES)

    listed = api.get("/v1/exports", ADMIN).json()["items"]
    assert [j["id"] for j in listed[:2]] == [again["id"], job["id"]]  # newest first
    assert api.get(f"/v1/exports/{'0' * 16}", ADMIN).status_code == 404
    assert api.get("/v1/exports/not-an-id", ADMIN).status_code == 422


def test_a_destination_that_cannot_be_reached_fails_with_why(seeded: Seeded) -> None:
    response = seeded.api.post("/v1/exports", ADMIN, {"out": "s3://some-bucket/x"})  # no S3 endpoint is set
    assert response.status_code == 202
    job = finished(seeded.api, response.headers["location"])
    assert job["status"] == "failed" and "DEEPWATCH_S3_ENDPOINT" in job["error"] and job["summary"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"out": "/tmp/anywhere"}, "out"),
    ({"out": "relative/dir"}, "out"),
    ({"out": "store:../up"}, "out"),
    ({"out": "ftp://host/x"}, "out"),
    ({"out": "store:ok", "format": "zip"}, "format"),
    ({"out": "store:ok", "query": {"verdict": ["nonsense"]}}, "query"),
    ({"out": "store:ok", "surprise": 1}, "surprise"),
    ({}, "out"),
])
def test_bad_requests_are_refused_naming_the_field(seeded: Seeded, body: dict, field: str) -> None:
    response = seeded.api.post("/v1/exports", ADMIN, body)
    assert response.status_code == 422, response.text
    assert any(field in error["loc"] for error in response.json()["detail"]), response.json()
    assert not any(j.request.out == body.get("out") for j in JOBS.all())


def test_one_export_at_a_time(seeded: Seeded) -> None:
    # A job that is still queued (as one is between the POST and its thread starting) blocks the next.
    blocking = JOBS.start(ExportRequest(out="store:blocking"), "test")
    assert blocking is not None
    try:
        response = seeded.api.post("/v1/exports", ADMIN, {"out": "store:second"})
        assert response.status_code == 409 and "running" in response.json()["detail"]
    finally:
        JOBS.update(blocking.id, status="failed", error="released by the test")
    assert seeded.api.get(f"/v1/exports/{blocking.id}", ADMIN).json()["status"] == "failed"


def test_only_admin_keys_export(seeded: Seeded) -> None:
    for method, path in (("post", "/v1/exports"), ("get", "/v1/exports"), ("get", f"/v1/exports/{'0' * 16}")):
        call = seeded.api.post if method == "post" else seeded.api.get
        args = ({"out": "store:denied"},) if method == "post" else ()
        assert call(path, None, *args).status_code == 401
        denied = call(path, READER, *args)
        assert denied.status_code == 403 and "admin" in denied.json()["detail"]
