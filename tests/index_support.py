"""Fixtures and builders of the index conformance suite (``test_index*.py``).

Every conformance test takes ``make_index`` (or ``index``) and runs once per backend in
``BACKENDS``: always on SQLite, on Elasticsearch when ``DEEPWATCH_TEST_ES_URL`` points at a live
cluster. conftest registers this module as a plugin (the fixtures); tests import the builders.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deepwatch.contracts import DetectorScore, Fingerprints, Hints, MediaRecord, Sighting
from deepwatch.settings import load_settings
from storage.index import SearchIndex, open_index

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
ES_URL = os.environ.get("DEEPWATCH_TEST_ES_URL")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    # The same SQLite file searched through the in-memory mirror (storage.search_memory).
    pytest.param("sqlite-memory", id="sqlite-memory"),
    pytest.param(
        "elasticsearch",
        id="elasticsearch",
        marks=pytest.mark.skipif(not ES_URL, reason="DEEPWATCH_TEST_ES_URL unset: no Elasticsearch to test against"),
    ),
]


def _open(backend: str, location: str) -> SearchIndex:
    """One index per ``location`` (a directory for SQLite; an index prefix for Elasticsearch)."""
    if backend in ("sqlite", "sqlite-memory"):
        settings = load_settings(index_backend="sqlite", index_sqlite_path=Path(location) / "index.sqlite3")
        index = open_index(settings, long_lived=backend == "sqlite-memory")
        if backend == "sqlite-memory":
            # Cache every word, however rare, so that the tests go through the cache's catch-up.
            index._words.min_size = 0  # type: ignore[attr-defined]
        return index
    if backend == "elasticsearch":
        from storage.index_es import ElasticsearchIndex

        # One prefix per location: every test gets its own indices, and drop() removes them.
        prefix = "dwtest-" + hashlib.sha256(location.encode()).hexdigest()[:16]
        settings = load_settings(index_backend="elasticsearch", es_url=ES_URL, es_index_prefix=prefix)
        return ElasticsearchIndex.from_settings(settings, refresh=True)  # "wait_for" costs up to 1 s a write
    raise NotImplementedError(backend)


MakeIndex = Callable[[], SearchIndex]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_index(backend: str) -> Iterator[MakeIndex]:
    """A factory rather than one index, so that property tests get a fresh index per example."""
    opened: list[SearchIndex] = []
    with tempfile.TemporaryDirectory(prefix="deepwatch-index-") as root:
        counter = iter(range(1_000_000))

        def make() -> SearchIndex:
            location = Path(root) / str(next(counter))
            location.mkdir()
            index = _open(backend, str(location))
            opened.append(index)
            return index

        yield make
        for index in opened:
            drop(index)
            index.close()


def drop(index: SearchIndex) -> None:
    """Remove what a test left on a shared server (Elasticsearch indices); files go with tmp_path."""
    getattr(index, "drop", lambda: None)()


@pytest.fixture
def index(make_index: MakeIndex) -> SearchIndex:
    return make_index()


# --- builders -------------------------------------------------------------------------------
def media_id(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def sighting(
    url: str,
    *,
    first: datetime = T0,
    last: datetime | None = None,
    count: int = 1,
    platform: str = "web",
    source: str = "test",
    title: str | None = None,
    uploader: str | None = None,
    text: str | None = None,
) -> Sighting:
    hints = Hints(title=title, uploader=uploader, text=text) if title or uploader or text else None
    return Sighting(
        url=url,
        canonical_url=url,
        source=source,
        platform=platform,
        first_seen=first,
        last_seen=last or first,
        count=count,
        hints=hints,
    )


def record(
    n: int | str,
    *,
    sightings: list[Sighting] | None = None,
    detectors: dict[str, float] | None = None,
    videohash: str | None = None,
    pdq: list[str] | None = None,
    first: datetime = T0,
    last: datetime | None = None,
    kind: str = "video",
    **fields: object,
) -> MediaRecord:
    mid = media_id(n)
    return MediaRecord(
        media_id=mid,
        kind=kind,
        fingerprints=Fingerprints(sha256=mid, videohash=videohash, pdq=pdq or []),
        sightings=sightings or [],
        first_seen=first,
        last_seen=last or first,
        detectors={name: DetectorScore(p_fake=p, model_version="v1") for name, p in (detectors or {}).items()},
        **fields,
    )


def hex_of(value: int, bits: int) -> str:
    return f"{value:0{bits // 4}x}"


