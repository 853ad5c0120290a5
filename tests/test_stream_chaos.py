"""kill -9 the worker twice mid-stream: nothing is lost and no record, sighting count or score doubles.

The real broker (this module's own), real ``deepwatch worker`` processes, the scoring API over real HTTP
with the real MesoNet weights, a loopback site, SQLite and a local object store. A stream of URLs
(distinct images and a clip, each published three times, once with a tracking parameter, and a 404
twice) goes in; the worker is SIGKILLed twice, each time a few events after it started and while new
items are still waiting, and restarted each time on the same data directory.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaProducer

from deepwatch.contracts import TOPIC_URLS, UrlDiscovered
from deepwatch.embedded.processes import ManagedProcess, wait_until
from storage.index_sqlite import SqliteIndex
from tests.detector_support import face_image, face_scene
from tests.ingest_support import Site
from tests.media_support import video_file
from tests.stream_support import Outcomes, blotches, failure_count, jpeg, scored_total, scoring_api, worker

KEY = "chaos-" + os.urandom(6).hex()
KILLS = 2
FAST_GROUP = {"kafka_session_timeout_s": "3", "kafka_heartbeat_s": "1"}  # the dead member leaves sooner


@pytest.fixture(scope="module")
def kafka_bootstrap(own_kafka: str) -> str:
    return own_kafka


@pytest.mark.slow
def test_kill_9_twice(kafka_bootstrap: str, site: Site, tmp_path: Path, models_dir: Path) -> None:
    items = {"/a.jpg": jpeg(face_scene(face_image(models_dir, "real/real00240.jpg"))),
             "/b.jpg": jpeg(face_scene(face_image(models_dir, "df/df00204.jpg"), at=(120, 60))),
             "/clip.mp4": video_file(tmp_path / "clip.mp4", frames=20).read_bytes()}
    items |= {f"/p{i}.jpg": jpeg(blotches(i)) for i in range(5)}
    for path, body in items.items():
        site.put(path, body, "video/mp4" if path.endswith(".mp4") else "image/jpeg")

    def ev(path: str, query: str = "") -> UrlDiscovered:
        return UrlDiscovered(url=site.base + path + query, canonical_url=site.base + path, source="chaos",
                             platform="web")

    events = [ev(p, q) for q in ("", "?utm_source=feed", "") for p in items] + [ev("/gone.mp4"), ev("/gone.mp4")]
    per_url = Counter(e.canonical_url for e in events)
    # the second /gone.mp4 is counted on the URL's failure document and publishes nothing
    published = [e for e in events if e is not events[-1]]

    with scoring_api(tmp_path, models_dir, KEY) as api:  # the same object store as the worker
        before = scored_total(api)
        procs: list[ManagedProcess] = []
        left_at_kills: list[int] = []
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        outcomes = Outcomes(kafka_bootstrap)
        try:
            for e in events:
                producer.send(TOPIC_URLS, key=e.key(), value=e.to_json())
            producer.flush()
            kill_at = 0
            for _ in range(KILLS):
                # a few more outcomes each time, while new items are still waiting to be scored
                kill_at = len({e.trace_id for e in published} & outcomes.done()) + 3
                procs.append(worker(kafka_bootstrap, tmp_path, api, KEY, f"worker-{len(procs)}", **FAST_GROUP).start())
                outcomes.wait(published, 60, procs[-1], at_least=kill_at)
                procs[-1].kill()  # SIGKILL: no commit, no changelog flush, no goodbye to the group
                assert wait_until(lambda: not procs[-1].alive(), 5)
                procs[-1].reap()
                outcomes.poll()
                left_at_kills.append(len({e.trace_id for e in published} - outcomes.done()))
            procs.append(worker(kafka_bootstrap, tmp_path, api, KEY, "worker-last", **FAST_GROUP).start())
            outcomes.wait(published, 90, procs[-1])
            assert wait_until(lambda: failure_count(tmp_path, site.base + "/gone.mp4") == 2, 20)
            scorings = scored_total(api) - before
        finally:
            producer.close()
            outcomes.close()
            for p in procs:
                p.stop(grace_s=10)

    # the kills did land mid-stream: each left events without an outcome for the next worker
    assert len(left_at_kills) == KILLS and all(left > 0 for left in left_at_kills), left_at_kills
    # every URL accounted for: a result, or a dead letter (and a failure document counting both events)
    assert {e.trace_id for e in published} <= outcomes.done()
    assert outcomes.letters[events[-2].trace_id].error_type == "NotFound"
    assert failure_count(tmp_path, site.base + "/gone.mp4") == per_url[site.base + "/gone.mp4"]

    # one record per distinct item (media_id = sha256 of its bytes), whose sighting count is exactly the
    # number of events of its URL: a redelivered event (its offset never committed) added nothing
    ids = {path: hashlib.sha256(body).hexdigest() for path, body in items.items()}
    assert {outcomes.results[e.trace_id].media_id for e in published if e.trace_id in outcomes.results} == set(
        ids.values())
    index = SqliteIndex(tmp_path / "index.sqlite3")
    try:
        for path, media_id in ids.items():
            record = index.get(media_id)
            assert record is not None and record.verdict in ("fake", "real", "uncertain", "no_face"), path
            assert {s.canonical_url: s.count for s in record.sightings} == {site.base + path: 3}, path
            assert record.score is not None or record.verdict == "no_face"
    finally:
        index.close()
    with sqlite3.connect(tmp_path / "index.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == len(items)

    # Scoring is at-least-once: a kill after the API scored an item and before its record was written
    # makes the next worker score it again (and write the same record: same media_id, same detectors,
    # so the record holds one score). Each kill can interrupt at most one item in flight (the agent
    # handles one event at a time), hence at most one extra scoring per kill; never fewer than one each.
    assert len(items) <= scorings <= len(items) + KILLS
