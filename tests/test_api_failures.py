"""``GET /v1/failures`` over a real local object store holding the worker's ``failures/`` documents: newest
first, bounded by ``limit`` and ``scan``, counted by stage and error type, damaged documents counted apart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from deepwatch.contracts import UrlFailure
from deepwatch.settings import load_settings
from storage.keys import FAILURES_PREFIX, failure_key
from storage.objects import open_object_store
from tests.api_support import Api
from tests.index_support import T0, sighting

READER, SUBMITTER = "r-secret-1", "s-secret-2"
STAGES = [("fetch", "HTTPStatusError"), ("fetch", "TimeoutError"), ("decode", "MediaError"), ("score", "ScoreError")]
N = 13


def failures() -> list[UrlFailure]:
    out = []
    for n in range(N):
        stage, error_type = STAGES[n % len(STAGES)]
        url = f"https://broken.example/{n}"
        # times out of key order, so that the listing's order is not the answer
        at = T0 + timedelta(minutes=(n * 7) % N)
        out.append(UrlFailure(canonical_url=url, sighting=sighting(url), stage=stage, error_type=error_type,
                              reason=f"{error_type} at {url}", attempts=1 + n % 3, at=at))
    return out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("api-failures"),
                             api_keys=f"reader={READER}:read,{SUBMITTER}:submit")
    store = open_object_store(settings)
    for failure in failures():
        store.put(failure_key(str(failure.canonical_url)), failure.model_dump_json().encode(),
                  content_type="application/json")
    store.put(f"{FAILURES_PREFIX}{hashlib.sha256(b'damaged').hexdigest()}.json", b'{"stage": "fetch"}')
    return Api(settings)


@pytest.fixture(autouse=True)
def api_of_this_module(api: Api) -> Iterator[None]:
    api.use()
    yield


def test_newest_first_with_counts(api: Api) -> None:
    want = sorted(failures(), key=lambda f: f.at, reverse=True)
    response = api.get("/v1/failures", READER, limit=5)
    assert response.status_code == 200, response.text
    page = response.json()
    assert [UrlFailure.model_validate(f) for f in page["items"]] == want[:5]
    assert (page["scanned"], page["unreadable"], page["truncated"]) == (N + 1, 1, False)
    assert page["by_stage"] == dict(Counter(f.stage for f in want))
    assert page["by_error_type"] == dict(Counter(f.error_type for f in want))
    assert list(page["by_stage"].values()) == sorted(page["by_stage"].values(), reverse=True)


def test_the_scan_is_bounded(api: Api) -> None:
    page = api.get("/v1/failures", READER, scan=4, limit=500).json()
    assert page["truncated"] is True and page["scanned"] == 4
    assert len(page["items"]) + page["unreadable"] == 4
    assert sum(page["by_stage"].values()) == len(page["items"])


@pytest.mark.parametrize(("params", "field"), [({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                                               ({"scan": 5001}, "scan"), ({"scan": "many"}, "scan")])
def test_bad_bounds_name_the_parameter(api: Api, params: dict, field: str) -> None:
    response = api.get("/v1/failures", READER, **params)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", field]


def test_needs_the_read_scope(api: Api) -> None:
    assert api.get("/v1/failures", None).status_code == 401
    refused = api.get("/v1/failures", SUBMITTER)
    assert refused.status_code == 403 and "'read' scope" in refused.json()["detail"]
