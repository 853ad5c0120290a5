"""End to end: the real broker, the real worker process, the scoring API over real HTTP (uvicorn, scoring in
process with the real MesoNet weights), a loopback web server with real media, SQLite and a local store.

URLs are published with repeats and tracking-parameter variants; each distinct item must be scored exactly
once (counted at the API's ``deepwatch_media_scored_total``), every dedup class must show up, and the
broken URLs must be in the DLQ with their reasons.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from deepwatch.contracts import TOPIC_URLS, UrlDiscovered
from deepwatch.embedded.processes import wait_until
from storage.index_sqlite import SqliteIndex
from tests.detector_support import face_image, face_scene
from tests.ingest_support import Site
from tests.media_support import garbage, video_file
from tests.stream_support import Outcomes, failure_count, jpeg, scored_total, scoring_api, worker


@pytest.fixture(scope="module")
def kafka_bootstrap(own_kafka: str) -> str:
    """This module's own broker: its worker consumes every URL on the topics, other tests' included."""
    return own_kafka


KEY = "e2e-" + os.urandom(6).hex()


@pytest.fixture
def api(tmp_path: Path, models_dir: Path) -> Iterator[str]:
    with scoring_api(tmp_path, models_dir, KEY) as url:
        yield url


@pytest.mark.slow
def test_urls_to_records(kafka_bootstrap: str, api: str, site: Site, tmp_path: Path, models_dir: Path) -> None:
    a = face_scene(face_image(models_dir, "real/real00240.jpg"))
    b = face_scene(face_image(models_dir, "df/df00204.jpg"), at=(120, 60))
    site.put("/a.jpg", jpeg(a), "image/jpeg")
    site.put("/repost-of-a.jpg", jpeg(a), "image/jpeg")
    site.put("/a-small.jpg", jpeg(a, quality=70, scale=0.6), "image/jpeg")
    site.put("/b.jpg", jpeg(b), "image/jpeg")
    site.put("/clip.mp4", video_file(tmp_path / "clip.mp4", frames=40).read_bytes(), "video/mp4")
    site.put("/broken.mp4", garbage(20_000, seed=3), "video/mp4")

    def ev(path: str, canonical: str | None = None) -> UrlDiscovered:
        return UrlDiscovered(url=site.base + path, canonical_url=site.base + (canonical or path), source="e2e",
                             platform="web")

    # order matters only within a canonical URL (one key, one partition); across URLs the worker may
    # take them in any order, so the near-duplicate and the exact repost come after their original is in
    first = [ev("/a.jpg"), ev("/b.jpg"), ev("/clip.mp4"), ev("/gone.mp4"), ev("/broken.mp4"),
             ev("/a.jpg?utm_source=x", canonical="/a.jpg"), ev("/b.jpg")]
    later = [ev("/repost-of-a.jpg"), ev("/a-small.jpg"), ev("/a.jpg?fbclid=1", canonical="/a.jpg"), ev("/gone.mp4")]
    before = scored_total(api)

    proc = worker(kafka_bootstrap, tmp_path, api, KEY).start()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    outcomes = Outcomes(kafka_bootstrap)

    try:
        for e in first:
            producer.send(TOPIC_URLS, key=e.key(), value=e.to_json())
        producer.flush()
        outcomes.wait(first, 240, proc)
        for e in later:
            producer.send(TOPIC_URLS, key=e.key(), value=e.to_json())
        producer.flush()
        outcomes.wait(later[:-1], 120, proc)  # a known-failed URL again: counted on its failure document, nothing published
        assert wait_until(lambda: failure_count(tmp_path, site.base + "/gone.mp4") == 2, 30)
    finally:
        producer.close()
        outcomes.close()
        proc.stop(grace_s=10)

    results, letters = outcomes.results, outcomes.letters
    by_url = {e.url.removeprefix(site.base): results.get(e.trace_id) for e in first + later}
    dedup = {u: r.dedup for u, r in by_url.items() if r}
    assert dedup == {"/a.jpg": "none", "/b.jpg": "url", "/clip.mp4": "none", "/a.jpg?utm_source=x": "url",
                     "/repost-of-a.jpg": "exact", "/a-small.jpg": "near", "/a.jpg?fbclid=1": "url"} | {
                     "/b.jpg": dedup["/b.jpg"]}
    assert scored_total(api) - before == 3  # a, b and the clip: each once
    failed = {e.url.removeprefix(site.base): letters[e.trace_id] for e in first + later if e.trace_id in letters}
    assert failed["/gone.mp4"].stage == "fetch" and failed["/gone.mp4"].error_type == "NotFound"
    assert failed["/broken.mp4"].error_type in ("Unsupported", "Corrupt")

    index = SqliteIndex(tmp_path / "index.sqlite3")
    try:
        original = index.get(by_url["/a.jpg"].media_id)  # type: ignore[union-attr]
        assert original is not None and original.verdict in ("fake", "uncertain", "real")
        assert {s.canonical_url.removeprefix(site.base): s.count for s in original.sightings} == {
            "/a.jpg": 3, "/repost-of-a.jpg": 1}
        near = index.get(by_url["/a-small.jpg"].media_id)  # type: ignore[union-attr]
        assert near is not None and near.duplicate_of == original.media_id and near.verdict == original.verdict
    finally:
        index.close()
    # URL dedup: three events of /a.jpg and two of /b.jpg cost one fetch each, as the single /a-small.jpg did
    # (yt-dlp makes more than one request per fetch)
    per_fetch = site.hits.count("/a-small.jpg")
    assert per_fetch >= 1 and site.hits.count("/a.jpg") == per_fetch and site.hits.count("/b.jpg") == per_fetch
