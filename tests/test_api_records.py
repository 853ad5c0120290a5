"""The API over a real SQLite index and object store: records and links, search and paging, aggregations,
near-duplicates of real clips, reviews with their audit trail, detectors, scopes, limits and /metrics.

One index is seeded per module (records built from the contracts); every route is called through FastAPI's
TestClient, and search results are checked against a brute-force filter over the seeded records.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from deepwatch.contracts import MediaInfo, MediaRecord, StoredObjects
from deepwatch.media.fingerprint import MediaFingerprint
from deepwatch.settings import derived_key_name, load_settings
from serve import context as api_context
from serve.api import build_api
from storage.index import open_index
from storage.keys import media_key, thumb_key
from storage.objects import open_object_store
from tests.fingerprint_support import Clips, clips, scene  # noqa: F401
from tests.index_support import HOUR, T0, media_id, record, sighting

READER, MODERATOR, SUBMITTER, ROOT = "r-secret-1", "m-secret-2", "s-secret-3", "a-secret-4"
KEYS = f"reader={READER}:read,moderator={MODERATOR}:read+review,{SUBMITTER}:submit,{ROOT}"
PLATFORMS = ("youtube", "tiktok", "web")
VERDICTS = ("fake", "uncertain", "real", None)
WORDS = ("cat", "dog", "election", "speech")
N = 40


def build_records() -> list[MediaRecord]:
    rng = random.Random(7)
    records = []
    for n in range(N):
        verdict = VERDICTS[n % len(VERDICTS)]
        score = None if verdict is None else round(rng.random(), 3)
        first = T0 + n * HOUR
        platform = PLATFORMS[n % len(PLATFORMS)]
        title = f"{WORDS[n % len(WORDS)]} clip {n}"
        records.append(record(
            f"api-{n}",
            sightings=[sighting(f"https://{platform}.example/v/{n}", first=first, platform=platform,
                                source="feed" if n % 2 else "tips", title=title)],
            detectors={} if score is None else {"meso4_df": score, "meso4_f2f": round(1 - score, 3)},
            score=score, verdict=verdict, first=first, last=first + HOUR, kind="video" if n % 3 else "image",
            timings={"fetch": 0.1 * (n + 1)},
        ))
    return records


def recorded(fp: MediaFingerprint) -> MediaRecord:
    return MediaRecord(media_id=fp.sha256, kind=fp.kind, fingerprints=fp.to_contract(), first_seen=T0, last_seen=T0,
                       media=MediaInfo(duration=fp.duration, width=fp.width, height=fp.height))


class Seeded:
    def __init__(self, root: Path, clip_records: list[MediaRecord]) -> None:
        self.settings = load_settings(data_dir=root, api_keys=KEYS, api_max_request_bytes=2048)
        self.records = {r.media_id: r for r in build_records() + clip_records}
        index = open_index(self.settings)
        index.upsert_many(self.records.values())
        index.close()
        self.app = build_api(self.settings)
        self.client = TestClient(self.app)

    def get(self, path: str, key: str | None = READER, **params: object) -> httpx.Response:
        headers = {"X-API-Key": key} if key else {}
        return self.client.get(path, params=params, headers=headers)  # type: ignore[arg-type]

    def search(self, **params: object) -> dict:
        response = self.get("/v1/search", **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, clips: Clips) -> Seeded:  # noqa: F811
    fingerprints = [clips.fingerprint(clips.get(name, make, **encoding)) for name, make, encoding in CLIPS]
    return Seeded(tmp_path_factory.mktemp("api-records"), [recorded(fp) for fp in fingerprints])


CLIPS = [("plain", lambda: scene(1), {}), ("lower-bitrate", lambda: scene(1), {"bit_rate": 120_000}),
         ("other-2", lambda: scene(2), {})]


@pytest.fixture(autouse=True)
def api_of_this_module(request: pytest.FixtureRequest) -> None:
    """Other modules' apps reconfigure the process-wide API context; put this module's back."""
    if "seeded" in request.fixturenames:
        seeded = request.getfixturevalue("seeded")
        current = api_context.configured()
        if current is None or current.settings is not seeded.settings:
            api_context.configure(seeded.settings)


def ids(document: dict) -> list[str]:
    return [item["media_id"] for item in document["items"]]


def expect(seeded: Seeded, keep: Callable[[MediaRecord], bool]) -> set[str]:
    return {m for m, r in seeded.records.items() if keep(r)}


# --- search ---------------------------------------------------------------------------------------
def test_every_filter_selects_what_a_brute_force_scan_selects(seeded: Seeded) -> None:
    since = T0 + 10 * HOUR
    cases: list[tuple[dict, Callable[[MediaRecord], bool]]] = [
        ({}, lambda r: True),
        ({"verdict": "fake"}, lambda r: r.verdict == "fake"),
        ({"verdict": ["fake", "unscored"]}, lambda r: r.verdict in ("fake", None)),
        ({"verdict": "real,uncertain"}, lambda r: r.verdict in ("real", "uncertain")),
        ({"min_score": 0.5}, lambda r: r.score is not None and r.score >= 0.5),
        ({"min_score": 0.2, "max_score": 0.6}, lambda r: r.score is not None and 0.2 <= r.score <= 0.6),
        ({"detector": "meso4_f2f=0.7:"}, lambda r: "meso4_f2f" in r.detectors and r.detectors["meso4_f2f"].p_fake >= 0.7),
        ({"platform": "tiktok"}, lambda r: any(s.platform == "tiktok" for s in r.sightings)),
        ({"source": "tips", "kind": "image"}, lambda r: r.kind == "image" and any(s.source == "tips" for s in r.sightings)),
        ({"since": since.isoformat()}, lambda r: r.last_seen >= since),
        ({"until": since.isoformat(), "verdict": "fake"}, lambda r: r.first_seen <= since and r.verdict == "fake"),
        ({"q": "election"}, lambda r: any(s.hints and "election" in (s.hints.title or "") for s in r.sightings)),
        ({"q": "dog", "platform": "web", "min_score": 0.1},
         lambda r: r.score is not None and r.score >= 0.1 and any(s.platform == "web" and "dog" in s.hints.title for s in r.sightings if s.hints)),
        ({"dedup": "none", "review": "none"}, lambda r: r.dedup == "none" and r.review is None),
    ]
    for params, keep in cases:
        document = seeded.search(limit=500, **params)
        wanted = expect(seeded, keep)
        assert set(ids(document)) == wanted and document["total"] == len(wanted), params
        assert wanted, f"{params} selects nothing: a weak case"


def test_sort_orders(seeded: Seeded) -> None:
    scores = [i["score"] for i in seeded.search(min_score=0, sort="score_desc", limit=500)["items"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 30
    newest = [i["first_seen"] for i in seeded.search(sort="newest", limit=500)["items"]]
    assert newest == sorted(newest, reverse=True)


def test_pages_stay_stable_while_records_arrive(seeded: Seeded) -> None:
    wanted = expect(seeded, lambda r: r.verdict in ("fake", "uncertain"))
    page = seeded.search(verdict="fake,uncertain", limit=4)
    seen, totals = ids(page), {page["total"]}
    arrivals = []
    index = open_index(seeded.settings)
    try:
        while page["next"]:
            # a new top-scoring record arrives between every two pages; it must not shift or join the pages
            late = record(f"late-{len(arrivals)}", score=0.999, verdict="fake", first=T0, detectors={"meso4_df": 0.999})
            index.upsert(late)
            arrivals.append(late.media_id)
            page = seeded.search(verdict="fake,uncertain", limit=4, cursor=page["next"])
            seen += ids(page)
            totals.add(page["total"])
    finally:
        index.close()
    assert len(seen) == len(set(seen)) and set(seen) == wanted and totals == {len(wanted)}
    assert len(arrivals) >= 4
    fresh = seeded.search(verdict="fake,uncertain", limit=500)
    assert set(arrivals) <= set(ids(fresh))  # a new search sees them
    for media in arrivals:
        seeded.records[media] = MediaRecord.model_validate(fresh["items"][ids(fresh).index(media)])


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"min_score": "high"}, "min_score"),
        ({"min_score": 2}, "min_score"),
        ({"min_score": 0.8, "max_score": 0.2}, "min_score"),
        ({"detector": "meso4_df=0.9"}, "detector"),
        ({"since": "last tuesday"}, "since"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since"),
        ({"kind": "audio"}, "kind"),
        ({"platform": "Not A Slug"}, "platform"),
        ({"q": "!!!"}, "q"),
        ({"sort": "random"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_search_parameters_are_422_naming_the_parameter(seeded: Seeded, params: dict, name: str) -> None:
    response = seeded.get("/v1/search", **params)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", name]], response.json()


def test_a_cursor_of_another_search_is_refused(seeded: Seeded) -> None:
    cursor = seeded.search(verdict="fake", limit=2)["next"]
    response = seeded.get("/v1/search", verdict="real", limit=2, cursor=cursor)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_aggregations_count_what_the_filters_select(seeded: Seeded) -> None:
    response = seeded.get("/v1/aggregations", platform="youtube")
    assert response.status_code == 200, response.text
    body = response.json()
    chosen = [r for r in seeded.records.values() if any(s.platform == "youtube" for s in r.sightings)]
    assert body["total"] == len(chosen)
    assert body["by_verdict"] == dict(Counter(r.verdict or "unscored" for r in chosen))
    assert sum(body["score_histogram"]) == sum(r.score is not None for r in chosen)
    assert body["stage_seconds"]["fetch"]["count"] == len(chosen)
    assert seeded.get("/v1/aggregations", since="soon").json()["detail"][0]["loc"] == ["query", "since"]


# --- one record, its links, its near-duplicates -----------------------------------------------
def test_media_record_with_served_links_from_the_local_store(seeded: Seeded) -> None:
    media = b"\x00\x00\x00\x18ftypmp42 not really a video" * 100
    thumb = b"\xff\xd8\xff\xe0 a thumbnail"
    target = record("with-objects", first=T0)
    target = target.model_copy(update={"objects": StoredObjects(media=media_key(target.media_id, "mp4"),
                                                                thumbnail=thumb_key(target.media_id))})
    store = open_object_store(seeded.settings)
    store.put(target.objects.media, media, content_type="video/mp4")
    store.put(target.objects.thumbnail, thumb, content_type="image/jpeg")
    index = open_index(seeded.settings)
    index.upsert(target)
    index.close()
    seeded.records[target.media_id] = target

    body = seeded.get(f"/v1/media/{target.media_id}").json()
    assert MediaRecord.model_validate(body["record"]) == target
    links = body["links"]
    assert links["media"].endswith(f"/v1/media/{target.media_id}/content")
    fetched = seeded.client.get(links["media"], headers={"X-API-Key": READER})
    assert fetched.content == media and fetched.headers["content-type"] == "video/mp4"
    assert seeded.client.get(links["thumbnail"], headers={"X-API-Key": READER}).content == thumb
    assert seeded.client.get(links["thumbnail"]).status_code == 401  # the bytes need a key too

    plain = next(iter(seeded.records))  # stored nothing
    assert seeded.get(f"/v1/media/{plain}").json()["links"] == {"media": None, "thumbnail": None}
    missing = seeded.get(f"/v1/media/{plain}/content")
    assert missing.status_code == 404 and plain in missing.json()["detail"]


def test_unknown_and_malformed_media_ids(seeded: Seeded) -> None:
    unknown = media_id("never recorded")
    for path in (f"/v1/media/{unknown}", f"/v1/similar/{unknown}", f"/v1/media/{unknown}/reviews"):
        response = seeded.get(path)
        assert response.status_code == 404 and unknown in response.json()["detail"], path
    for bad in ("abc", unknown.upper(), unknown + "0"):
        response = seeded.get(f"/v1/media/{bad}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "media_id"]


def test_similar_finds_the_re_encoded_clip_as_a_duplicate(seeded: Seeded, clips: Clips) -> None:  # noqa: F811
    plain, lower, other = (clips.fingerprint(clips.get(name, make, **enc)).sha256 for name, make, enc in CLIPS)
    response = seeded.get(f"/v1/similar/{plain}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["radius"] == {"videohash": 10, "pdq": 31, "pdq_faces": 31}
    found = {i["media_id"]: i for i in body["items"] if i["kind"] == "pdq"}
    assert lower in found and other not in found and plain not in found
    assert found[lower]["relation"] == "duplicate" and 0 <= found[lower]["distance"] <= 31
    assert found[lower]["record"]["media_id"] == lower
    # radius 0 on every kind: only bit-identical hashes (a re-encode keeps no PDQ; it may keep the coarse videohash)
    tight = seeded.get(f"/v1/similar/{plain}", videohash=0, pdq=0, pdq_faces=0).json()
    assert all(i["distance"] == 0 for i in tight["items"])
    assert seeded.get(f"/v1/similar/{plain}", pdq=300).json()["detail"][0]["loc"] == ["query", "pdq"]


# --- reviews ------------------------------------------------------------------------------------
def test_review_records_the_key_name_and_keeps_an_audit_trail(seeded: Seeded) -> None:
    target = sorted(m for m, r in seeded.records.items() if r.verdict == "uncertain")[0]
    first = seeded.client.post(f"/v1/media/{target}/review", json={"label": "fake", "note": "lips out of sync"},
                               headers={"X-API-Key": MODERATOR})
    assert first.status_code == 200, first.text
    reviewed = MediaRecord.model_validate(first.json())
    assert reviewed.review is not None and (reviewed.review.label, reviewed.review.reviewer) == ("fake", "moderator")
    assert reviewed.review.note == "lips out of sync" and reviewed.score == seeded.records[target].score
    second = seeded.client.post(f"/v1/media/{target}/review", json={"label": "real"}, headers={"X-API-Key": ROOT})
    assert second.json()["review"]["reviewer"] == derived_key_name(ROOT) != ROOT

    trail = seeded.get(f"/v1/media/{target}/reviews").json()
    assert [(e["previous"], e["review"]["label"], e["review"]["reviewer"]) for e in trail] == [
        ("none", "fake", "moderator"), ("fake", "real", derived_key_name(ROOT))]
    assert seeded.get(f"/v1/media/{target}").json()["record"]["review"]["label"] == "real"
    assert target in ids(seeded.search(review="real", limit=500))
    seeded.records[target] = MediaRecord.model_validate(second.json())
    # refused: the wrong scope, a bad label, an unknown field, an unknown record, an oversized note
    assert seeded.client.post(f"/v1/media/{target}/review", json={"label": "fake"},
                              headers={"X-API-Key": READER}).status_code == 403
    bad = seeded.client.post(f"/v1/media/{target}/review", json={"label": "deepfake"}, headers={"X-API-Key": MODERATOR})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "label"]
    extra = seeded.client.post(f"/v1/media/{target}/review", json={"label": "fake", "reviewer": "someone else"},
                               headers={"X-API-Key": MODERATOR})
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "reviewer"]
    unknown = media_id("no such")
    assert seeded.client.post(f"/v1/media/{unknown}/review", json={"label": "fake"},
                              headers={"X-API-Key": MODERATOR}).status_code == 404
    assert len(seeded.get(f"/v1/media/{target}/reviews").json()) == 2  # nothing refused was recorded


def test_request_bodies_over_the_limit_are_413(seeded: Seeded) -> None:
    target = media_id("api-3")
    big = {"label": "fake", "note": "x" * 3000}  # api_max_request_bytes is 2048 here
    declared = seeded.client.post(f"/v1/media/{target}/review", json=big, headers={"X-API-Key": MODERATOR})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        yield b'{"label": "fake", "note": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    streamed = seeded.client.post(f"/v1/media/{target}/review", content=chunks(),
                                  headers={"X-API-Key": MODERATOR, "content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert seeded.get(f"/v1/media/{target}/reviews").json() == []


# --- detectors, scopes, OpenAPI, metrics -----------------------------------------------------------
def test_detectors_lists_the_registered_mesonet_models(seeded: Seeded) -> None:
    body = seeded.get("/v1/detectors").json()
    by_name = {d["name"]: d for d in body["detectors"]}
    assert {"meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f"} <= set(by_name)
    meso = by_name["meso4_df"]
    assert (meso["modality"], meso["input_size"], meso["license"]) == ("image", 256, "Apache-2.0")
    assert meso["source_url"].startswith("https://") and meso["version"] and meso["enabled"] is True


ROUTES = [
    ("get", "/v1/search", "read"),
    ("get", "/v1/aggregations", "read"),
    ("get", f"/v1/media/{media_id('api-0')}", "read"),
    ("get", f"/v1/media/{media_id('api-0')}/reviews", "read"),
    ("get", f"/v1/similar/{media_id('api-0')}", "read"),
    ("get", "/v1/detectors", "read"),
    ("post", f"/v1/media/{media_id('api-0')}/review", "review"),
]


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_each_route_needs_a_key_with_its_scope(seeded: Seeded, method: str, path: str, scope: str) -> None:
    call = getattr(seeded.client, method)
    kwargs = {"json": {"label": "unsure"}} if method == "post" else {}
    assert call(path, **kwargs).status_code == 401
    assert call(path, headers={"X-API-Key": "wrong"}, **kwargs).status_code == 403
    lacking = SUBMITTER if scope == "read" else READER
    refused = call(path, headers={"X-API-Key": lacking}, **kwargs)
    assert refused.status_code == 403 and f"'{scope}' scope" in refused.json()["detail"]
    holder = READER if scope == "read" else MODERATOR
    assert call(path, headers={"Authorization": f"Bearer {holder}"}, **kwargs).status_code == 200
    assert call(path, headers={"X-API-Key": ROOT}, **kwargs).status_code == 200


def test_openapi_lists_every_route(seeded: Seeded) -> None:
    paths = seeded.client.get("/openapi.json").json()["paths"]
    for route in ("/v1/search", "/v1/aggregations", "/v1/media/{media_id}", "/v1/media/{media_id}/review",
                  "/v1/media/{media_id}/reviews", "/v1/similar/{media_id}", "/v1/detectors", "/v1/submit"):
        assert route in paths, route
    assert {p["name"] for p in paths["/v1/search"]["get"]["parameters"]} >= {
        "q", "verdict", "min_score", "max_score", "detector", "platform", "source", "kind", "dedup", "review",
        "since", "until", "sort", "limit", "cursor"}
    assert seeded.client.get("/docs").status_code == 200


def metric(client: TestClient, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_requests_per_route_and_status_without_a_key(seeded: Seeded) -> None:
    count = "deepwatch_api_requests_total"
    before_ok = metric(seeded.client, count, route="/v1/search", status="200")
    before_bad = metric(seeded.client, count, route="/v1/search", status="422")
    before_hist = metric(seeded.client, "deepwatch_api_request_seconds_count", route="/v1/media/{media_id}")
    for _ in range(3):
        seeded.search(limit=1)
    seeded.get("/v1/search", limit=0)
    seeded.get(f"/v1/media/{media_id('api-1')}")
    seeded.get(f"/v1/media/{media_id('api-2')}")  # one route label for every id
    response = seeded.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert metric(seeded.client, count, route="/v1/search", status="200") == before_ok + 3
    assert metric(seeded.client, count, route="/v1/search", status="422") == before_bad + 1
    assert metric(seeded.client, "deepwatch_api_request_seconds_count", route="/v1/media/{media_id}") == before_hist + 2
    seeded.client.get("/no/such/path")
    assert metric(seeded.client, count, route="unmatched", status="404") >= 1


def test_a_store_without_links_and_the_s3_store_with_presigned_ones(seeded: Seeded, tmp_path: Path, s3_server) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=tmp_path, api_keys=READER, store_backend="s3", s3_endpoint=s3_server.endpoint,
                             s3_secure=False, s3_bucket="api-links", s3_access_key=s3_server.access_key,
                             s3_secret_key=s3_server.secret_key)
    target = record("on-s3", first=T0)
    key = media_key(target.media_id, "jpg")
    target = target.model_copy(update={"objects": StoredObjects(media=key)})
    open_object_store(settings).put(key, b"jpeg bytes on s3", content_type="image/jpeg")
    index = open_index(settings)
    index.upsert(target)
    index.close()
    client = TestClient(build_api(settings))
    links = client.get(f"/v1/media/{target.media_id}", headers={"X-API-Key": READER}).json()["links"]
    assert links["thumbnail"] is None and links["media"].startswith(f"http://{s3_server.endpoint}/api-links/")
    fetched = httpx.get(links["media"])
    assert fetched.status_code == 200 and fetched.content == b"jpeg bytes on s3"
    # the served route works on S3 too
    assert client.get(f"/v1/media/{target.media_id}/content", headers={"X-API-Key": READER}).content == b"jpeg bytes on s3"



# --- what happened to a URL -----------------------------------------------------------------------
def test_url_status_answers_with_the_record_or_the_failure(seeded: Seeded) -> None:
    from deepwatch.contracts import UrlFailure
    from storage.keys import failure_key

    # any spelling of a recorded URL finds its record (tracking parameters and fragments are not the URL)
    found = seeded.get("/v1/urls", url="https://TikTok.example/v/1?utm_source=x#t=3")
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["status"] == "recorded" and body["canonical_url"] == "https://tiktok.example/v/1"
    assert body["record"]["media_id"] == media_id("api-1")

    broken = "https://web.example/broken.mp4"
    failure = UrlFailure(canonical_url=broken, sighting=sighting(broken), stage="fetch", error_type="NotFound",
                         reason=f"{broken}: HTTP 404", attempts=1)
    open_object_store(seeded.settings).put(failure_key(broken), failure.to_json(), content_type="application/json")
    failed = seeded.get("/v1/urls", url=broken).json()
    assert failed["status"] == "failed" and failed["record"] is None
    assert failed["failure"]["stage"] == "fetch" and "HTTP 404" in failed["failure"]["reason"]

    unseen = seeded.get("/v1/urls", url="https://web.example/never")
    assert unseen.status_code == 404 and "has not been seen" in unseen.json()["detail"]
    invalid = seeded.get("/v1/urls", url="ftp://web.example/x")
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["query", "url"]
    assert seeded.get("/v1/urls", key=SUBMITTER, url=broken).status_code == 403
