"""The pipeline's stages on real parts: a loopback web server with real media, the real fetcher (SSRF guard
on, loopback allowed), normalizer and fingerprinter, a SQLite index and a local object store in tmp_path,
and the real MesoNet detectors.

Scoring runs in this process (``serve.scoring.score_file`` behind the scoring client's interface) so the
stages are tested without a server; the HTTP client has its own tests, and the API over real HTTP is the
end-to-end test's job.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deepwatch.contracts import DeadLetter, ScoredMedia, UrlDiscovered, parse
from deepwatch.media.encode import write_video
from deepwatch.settings import Settings, load_settings
from serve.scoring import aggregate
from storage.index_sqlite import SqliteIndex
from storage.objects_local import LocalObjectStore
from stream.pipeline import FAILED, StreamPipeline
from stream.records import Position, ResultMessage
from stream.retry import GiveWay
from stream.scoring_client import ScoreAnswer
from tests.detector_support import face_image, face_scene
from tests.ingest_support import Site
from tests.media_support import garbage
from tests.stream_support import jpeg

T = datetime(2026, 3, 1, tzinfo=UTC)


class InProcessScorer:
    """The scoring client's interface, scoring in this process with the real detectors; counts its calls."""

    def __init__(self, store: LocalObjectStore, settings: Settings, detectors: list) -> None:
        self.store, self.settings, self.detectors = store, settings, detectors
        self.scored: list[str] = []

    async def score(self, object_key: str, until: float | None = None) -> ScoreAnswer:
        from serve.scoring import score_file

        def run() -> ScoreAnswer:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / object_key.rsplit("/", 1)[-1]
                with self.store.get(object_key) as stream:
                    path.write_bytes(stream.read())
                return ScoreAnswer.model_validate(score_file(path, self.settings, self.detectors).to_json())

        self.scored.append(object_key)
        return await asyncio.to_thread(run)


def as_read(found: list[ResultMessage]) -> list[ScoredMedia]:
    """Published results as a consumer of deepwatch.results reads them; each is keyed by its media id."""
    results = [parse(ScoredMedia, value) for _, value in found]
    assert [key for key, _ in found] == [r.media_id.encode() for r in results]
    return results


def recording_pipeline(settings: Settings, index: SqliteIndex, store: LocalObjectStore,
                       handled: dict[str, str] | None = None) -> tuple[StreamPipeline, list[ScoredMedia]]:
    """A pipeline with no scorer (for URL hits) and the list its results land in; a dead letter fails the test."""
    results: list[ScoredMedia] = []

    async def on_results(found: list[ResultMessage]) -> None:
        results.extend(as_read(found))

    async def on_letter(d: DeadLetter) -> None:
        raise AssertionError(f"nothing is dead-lettered: {d}")

    pipeline = StreamPipeline(settings, index=index, store=store, scorer=None,  # type: ignore[arg-type]
                              handled={} if handled is None else handled, publish_results=on_results,
                              publish_dead_letter=on_letter)
    return pipeline, results


def event(site: Site, path: str, canonical: str | None = None, hours: int = 0) -> UrlDiscovered:
    return UrlDiscovered(url=site.base + path, canonical_url=site.base + (canonical or path), source="test",
                         platform="web", discovered_at=T + timedelta(hours=hours))


def test_every_dedup_class_and_failure(site: Site, tmp_path: Path, models_dir: Path, mesonet: dict) -> None:
    settings = load_settings(data_dir=tmp_path, fetch_allow_networks="127.0.0.0/8", fetch_timeout_s=30,
                             worker_retry_base_s=0.01, worker_retry_max_s=0.05, worker_fetch_attempts=2)
    a = face_scene(face_image(models_dir, "real/real00240.jpg"))
    b = face_scene(face_image(models_dir, "df/df00204.jpg"), at=(120, 60))
    site.put("/a.jpg", jpeg(a), "image/jpeg")
    site.put("/copy-of-a.jpg", jpeg(a), "image/jpeg")
    site.put("/a-small.jpg", jpeg(a, quality=70, scale=0.6), "image/jpeg")
    site.put("/b.jpg", jpeg(b), "image/jpeg")
    moving = [face_scene(face_image(models_dir, "df/df00204.jpg"), size=(480, 360), at=(120 + 2 * i, 60), side=200)
              for i in range(20)]
    write_video(tmp_path / "clip.mp4", moving, fps=10.0, gop=5)
    site.put("/clip.mp4", (tmp_path / "clip.mp4").read_bytes(), "video/mp4")
    site.put("/broken.mp4", garbage(20_000, seed=3), "video/mp4")
    site.put("/busy.mp4", b"try later", "text/plain", status=503)

    index = SqliteIndex(tmp_path / "index.sqlite3")
    store = LocalObjectStore(tmp_path / "objects")
    scorer = InProcessScorer(store, settings, list(mesonet.values()))
    results: list[ScoredMedia] = []
    letters: list[DeadLetter] = []
    handled: dict[str, str] = {}

    async def on_results(found: list[ResultMessage]) -> None:
        results.extend(as_read(found))

    async def on_letter(d: DeadLetter) -> None:
        letters.append(d)

    pipeline = StreamPipeline(settings, index=index, store=store, scorer=scorer, handled=handled,  # type: ignore[arg-type]
                              publish_results=on_results, publish_dead_letter=on_letter)
    plan = [
        (event(site, "/a.jpg"), "scored"),
        (event(site, "/a.jpg?utm_source=feed", canonical="/a.jpg", hours=1), "url"),
        (event(site, "/copy-of-a.jpg", hours=2), "exact"),
        (event(site, "/a-small.jpg", hours=3), "near"),
        (event(site, "/b.jpg"), "scored"),
        (event(site, "/clip.mp4"), "scored"),
        (event(site, "/missing.mp4"), "failed"),
        (event(site, "/broken.mp4"), "failed"),
        (event(site, "/busy.mp4"), "failed"),
        (event(site, "/missing.mp4", hours=1), "failed-again"),
    ]

    async def run() -> list[str]:
        outcomes = []
        for offset, (e, _) in enumerate(plan):
            outcomes.append(await pipeline.process(e, Position("deepwatch.urls", 0, offset, 1_000 + offset)))
        # the first event redelivered (a crash before its offset was committed): nothing doubles
        outcomes.append(await pipeline.process(plan[0][0], Position("deepwatch.urls", 0, 0, 1_000)))
        return outcomes

    outcomes = asyncio.run(run())
    assert outcomes == [want for _, want in plan] + ["url"]

    # scored once per distinct item, by the real detectors
    assert len(scorer.scored) == 3
    a_id = results[0].media_id
    rec_a = index.get(a_id)
    assert rec_a is not None and rec_a.verdict in ("fake", "uncertain", "real") and rec_a.detectors
    assert {s.canonical_url: s.count for s in rec_a.sightings} == {
        site.base + "/a.jpg": 2, site.base + "/copy-of-a.jpg": 1}
    assert [r.dedup for r in results[:4]] == ["none", "url", "exact", "near"]
    near = index.get(results[3].media_id)
    assert near is not None and near.dedup == "near" and near.duplicate_of == a_id
    assert (near.verdict, near.score, near.detectors) == (rec_a.verdict, rec_a.score, rec_a.detectors)
    # the ensemble settings behind the verdict, the scoring's own, go with it (to the near-duplicate too)
    assert rec_a.ensemble is not None and rec_a.ensemble.fake_threshold == settings.verdict_fake_threshold
    assert near.ensemble == rec_a.ensemble
    clip = index.get(results[5].media_id)
    assert clip is not None and clip.kind == "video" and clip.media.duration
    # per-face scores, in time order, as the detectors gave them: each frame's worst face, averaged, is the media score
    times = [f.t for f in clip.face_scores]
    assert len(times) >= 2 and times == sorted(times) and times[-1] <= clip.media.duration
    assert all(0.0 <= p <= 1.0 for f in clip.face_scores for p in [f.score, *f.scores.values()])  # type: ignore[list-item]
    for name, detector_score in clip.detectors.items():
        value, frames = aggregate([f.scores[name] for f in clip.face_scores], [f.frame for f in clip.face_scores])
        assert value == pytest.approx(detector_score.p_fake, abs=1e-5) and frames == detector_score.frames
    assert [f.t for f in rec_a.face_scores] == [0.0] and near.face_scores == []  # a near-duplicate has no faces of its own
    assert results[-1].media_id == a_id and results[-1].dedup == "url"

    # objects: thumbnails and results for every record, media gone unless flagged
    for r in (rec_a, near, clip):
        assert store.exists(f"thumbs/{r.media_id}.jpg") and store.exists(f"results/{r.media_id}.json")
    assert not list(store.list_keys("media/"))
    flagged = [r for r in (rec_a, index.get(results[4].media_id), clip) if r and r.verdict == "fake"]
    assert sorted(store.list_keys("flagged/")) == sorted(r.objects.media for r in flagged)

    # failures: dead letters with stage and reason, and a failure document per URL
    assert [(d.stage, d.error_type) for d in letters] == [
        ("fetch", "NotFound"), (letters[1].stage, letters[1].error_type), ("fetch", "Transient")]
    assert letters[1].stage in ("normalize", "fetch") and letters[1].error_type in ("Unsupported", "Corrupt")
    assert letters[2].attempts == 2 and "503" in letters[2].message
    missing = pipeline.load_failure(site.base + "/missing.mp4")
    assert missing is not None and missing.verdict == "error" and missing.sighting.count == 2
    assert "404" in missing.reason
    assert handled[site.base + "/missing.mp4"] == FAILED and handled[site.base + "/a.jpg"] == a_id
    # metrics saw it all
    text = pipeline.metrics.render().decode()
    assert 'deepwatch_stream_dedup_hits_total{dedup_class="near"} 1.0' in text
    fetch_letters = sum(d.stage == "fetch" for d in letters)
    assert f'deepwatch_stream_dead_letters_total{{stage="fetch"}} {fetch_letters:.1f}' in text
    assert 'deepwatch_stream_dedup_hits_total{dedup_class="url"} 3.0' in text  # a repeat, a replay, a failed URL
    index.close()


def test_past_its_deadline_a_batch_starts_no_fetch(site: Site, tmp_path: Path, models_dir: Path) -> None:
    """Once the deadline has passed, hits already in hand are recorded and no event that needs a fetch is
    started (the worker reads the rest again, so that it keeps polling Kafka); the first event always runs."""
    import time

    from bench.stream import known_records

    settings = load_settings(data_dir=tmp_path, fetch_allow_networks="127.0.0.0/8", fetch_timeout_s=30,
                             worker_fetch_attempts=1)
    index = SqliteIndex(tmp_path / "index.sqlite3")
    known = known_records(2)
    index.upsert_many(known)
    results: list[ScoredMedia] = []
    letters: list[DeadLetter] = []

    async def on_results(found: list[ResultMessage]) -> None:
        results.extend(as_read(found))

    async def on_letter(d: DeadLetter) -> None:
        letters.append(d)

    pipeline = StreamPipeline(settings, index=index, store=LocalObjectStore(tmp_path / "objects"),  # type: ignore[arg-type]
                              scorer=None, handled={}, publish_results=on_results, publish_dead_letter=on_letter)

    def repost(i: int, offset: int) -> tuple[UrlDiscovered, Position]:
        url = known[i].sightings[0].canonical_url
        e = UrlDiscovered(url=url, canonical_url=url, source="test", platform="web", discovered_at=T)
        return e, Position("deepwatch.urls", 0, offset, 1_000 + offset)

    def missing(offset: int) -> tuple[UrlDiscovered, Position]:
        return event(site, f"/gone-{offset}.mp4"), Position("deepwatch.urls", 0, offset, 1_000 + offset)

    past = time.monotonic() - 1
    batch = [repost(0, 0), repost(1, 1), missing(2), repost(0, 3)]
    assert asyncio.run(pipeline.process_many(batch, past)) == ["url", "url"]
    assert site.hits == [] and [r.media_id for r in results] == [known[0].media_id, known[1].media_id]
    # the rest, read again: the first event runs whatever the deadline, then the same rule
    assert asyncio.run(pipeline.process_many(batch[2:], past)) == ["failed", "url"]
    assert site.hits == ["/gone-2.mp4"] and [d.stage for d in letters] == ["fetch"]
    assert asyncio.run(pipeline.process_many([missing(4), missing(5)], past)) == ["failed"]
    # no deadline: all of them
    assert asyncio.run(pipeline.process_many([missing(6), repost(1, 7)])) == ["failed", "url"]
    # a URL the batch's first look did not know, handled by an earlier event of the same batch: found then
    again = (event(site, "/gone-8.mp4", hours=1), Position("deepwatch.urls", 0, 9, 1_009))
    assert asyncio.run(pipeline.process_many([missing(8), again])) == ["failed", "failed-again"]
    record = index.get(known[0].media_id)
    assert record is not None and record.sightings[0].count == 3  # the seed's sighting, then two reposts
    index.close()


def test_a_hit_writes_the_handled_table_only_when_it_did_not_know_the_url(tmp_path: Path) -> None:
    """Each table write is a changelog message: a URL found in the index is written to the table once however
    many of its reposts a batch holds, and a URL the table knew is not written again."""
    from bench.stream import known_records

    class CountingTable(dict[str, str]):
        writes = 0

        def __setitem__(self, key: str, value: str) -> None:
            CountingTable.writes += 1
            super().__setitem__(key, value)

    index = SqliteIndex(tmp_path / "index.sqlite3")
    known = known_records(2)
    index.upsert_many(known)
    handled = CountingTable()
    published: list[ScoredMedia] = []

    async def on_results(found: list[ResultMessage]) -> None:
        published.extend(as_read(found))

    async def on_letter(d: DeadLetter) -> None:
        raise AssertionError(d)

    pipeline = StreamPipeline(load_settings(data_dir=tmp_path), index=index,
                              store=LocalObjectStore(tmp_path / "objects"), scorer=None,  # type: ignore[arg-type]
                              handled=handled, publish_results=on_results, publish_dead_letter=on_letter)

    def reposts(*pairs: tuple[int, int]) -> list[tuple[UrlDiscovered, Position | None]]:
        out: list[tuple[UrlDiscovered, Position | None]] = []
        for i, offset in pairs:
            url = known[i].sightings[0].canonical_url
            e = UrlDiscovered(url=url, canonical_url=url, source="test", platform="web", discovered_at=T)
            out.append((e, Position("deepwatch.urls", 0, offset, 1_000 + offset)))
        return out

    assert asyncio.run(pipeline.process_many(reposts((0, 0), (0, 1), (1, 2), (0, 3)))) == ["url"] * 4
    assert CountingTable.writes == 2 and handled == {r.sightings[0].canonical_url: r.media_id for r in known}
    assert asyncio.run(pipeline.process_many(reposts((0, 4), (1, 5)))) == ["url"] * 2
    assert CountingTable.writes == 2 and len(published) == 6
    stored = [index.get(r.media_id) for r in known]
    assert [r.sightings[0].count for r in stored if r is not None] == [5, 3]  # the seed's, then the reposts
    index.close()


def test_past_its_deadline_a_wait_for_a_service_that_is_down_gives_way(site: Site, tmp_path: Path) -> None:
    """The index or the object store down: a stage retries them for as long as they are down, but not past its
    batch's deadline. There it stops waiting and the events from the one waiting on are left to be read again
    (the worker must go back to Kafka before it is put out of its group); the outcomes before it stand."""
    import time

    import numpy as np

    from bench.stream import known_records
    from storage.errors import StorageError
    from storage.index import SearchIndexError

    class DownStore(LocalObjectStore):
        def put(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise StorageError("the object store is down")

    class DownIndex(SqliteIndex):
        down = False

        def add_sightings(self, items):  # type: ignore[no-untyped-def]
            if self.down:
                raise SearchIndexError("the index is down")
            return super().add_sightings(items)

    settings = load_settings(data_dir=tmp_path, fetch_allow_networks="127.0.0.0/8", fetch_timeout_s=30,
                             worker_retry_base_s=0.05, worker_retry_max_s=0.2)
    site.put("/new.jpg", jpeg(np.full((64, 64, 3), 90, dtype=np.uint8)), "image/jpeg")
    index = DownIndex(tmp_path / "index.sqlite3")
    known = known_records(2)
    index.upsert_many(known)
    pipeline, results = recording_pipeline(settings, index, DownStore(tmp_path / "objects"))

    def repost(i: int, offset: int) -> tuple[UrlDiscovered, Position]:
        url = known[i].sightings[0].canonical_url
        e = UrlDiscovered(url=url, canonical_url=url, source="test", platform="web", discovered_at=T)
        return e, Position("deepwatch.urls", 0, offset, 1_000 + offset)

    def bounded(call):  # type: ignore[no-untyped-def]
        # a wait that never gives way fails here in seconds, not at the suite's 300 s timeout
        return asyncio.run(asyncio.wait_for(call, 20))

    new = (event(site, "/new.jpg"), Position("deepwatch.urls", 0, 1, 1_001))
    started = time.monotonic()
    outcomes = bounded(pipeline.process_many([repost(0, 0), new, repost(1, 2)], time.monotonic() + 0.5))
    took = time.monotonic() - started
    assert outcomes == ["url"] and set(site.hits) == {"/new.jpg"} and took < 10
    assert [r.media_id for r in results] == [known[0].media_id]
    index.down = True
    started = time.monotonic()
    assert bounded(pipeline.process_many([repost(1, 2)], time.monotonic() + 0.5)) == []
    assert time.monotonic() - started < 10
    with pytest.raises(GiveWay, match="record"):
        bounded(pipeline.process(*repost(1, 2), deadline=time.monotonic() + 0.3))
    index.down = False
    assert asyncio.run(pipeline.process_many([repost(1, 2)], time.monotonic() + 0.5)) == ["url"]
    stored = [index.get(r.media_id) for r in known]
    assert [r.sightings[0].count for r in stored if r is not None] == [2, 2]  # each: the seed's and one repost
    index.close()


def test_a_result_is_what_validating_its_values_gives() -> None:
    """Results are written from validated values, the record's scores as the index keeps them (RecordHead.scores):
    each must be, byte for byte, what validating those values and dumping the contract gives, for a URL hit's record
    head and for a whole record, whatever the URL and trace id hold and whenever it is written."""
    from deepwatch.contracts import DetectorScore, record_scores_json, scored_media_json
    from storage.index import RecordHead
    from stream.records import result_of
    from tests.index_support import record

    event = UrlDiscovered(url="https://video.example/v/1?utm_source=x", canonical_url="https://video.example/v/1",
                          source="bench", platform="web", discovered_at=datetime(2026, 11, 2, tzinfo=UTC))
    # quotes, backslashes, a control character, DEL, non-ASCII and a line separator, in the values an event brings
    odd = event.model_copy(update={"canonical_url": 'https://b.example/"\\\u00e9\u2028/\x7f',
                                   "trace_id": 'a"\\\t\x01\u00e9'})
    scores = {"meso4_df": DetectorScore(p_fake=0.8, model_version="2018.1", frames=32),
              "x": DetectorScore(p_fake=1e-07, model_version='v"2', frames=0)}
    scored = record(2, detectors={"d": 0.2}, score=0.2, verdict="real")
    unscored = record(3)
    heads = [(RecordHead(record(1).media_id, "near", record_scores_json("fake", 0.8, scores)), "fake", 0.8, scores),
             (RecordHead.of(scored), "real", 0.2, scored.detectors), (RecordHead.of(unscored), None, None, {})]
    for head, verdict, score, detectors in heads:
        for e in (event, odd):
            for dedup in ("url", None):
                for at in (datetime(2026, 12, 7, 10, 0, tzinfo=UTC), datetime(2026, 12, 7, 10, 0, 0, 1234, tzinfo=UTC)):
                    validated = ScoredMedia(media_id=head.media_id, trace_id=e.trace_id, canonical_url=e.canonical_url,
                                            dedup=dedup or head.dedup, verdict=verdict, score=score,
                                            detectors=detectors, at=at)
                    written = scored_media_json(media_id=head.media_id, trace_id=e.trace_id,
                                                canonical_url=e.canonical_url, dedup=dedup or head.dedup,
                                                record_scores=head.scores, at=at)
                    assert written == validated.to_json()
                key, value = result_of(head, e, dedup)  # now
                read = parse(ScoredMedia, value)
                assert key == head.media_id.encode() and read.model_copy(update={"at": at}) == validated
                assert abs((read.at - datetime.now(UTC)).total_seconds()) < 60


def test_url_hits_are_written_a_few_records_at_a_time_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index writes of a batch of URL hits go a few records at a time (the next write runs while the
    previous results are sent): every hit is counted once, each record's hits in their order, and its results
    published in that order (they share a key)."""
    from bench.stream import T0, known_records
    from stream import pipeline as module

    monkeypatch.setattr(module, "RECORD_CHUNK", 2)
    index = SqliteIndex(tmp_path / "index.sqlite3")
    known = known_records(5)
    index.upsert_many(known)
    handled: dict[str, str] = {}
    pipeline, results = recording_pipeline(load_settings(data_dir=tmp_path), index, LocalObjectStore(tmp_path / "o"),
                                           handled)
    order = [3, 0, 3, 1, 4, 0, 2, 3, 1, 4, 4, 0]
    events = []
    for offset, i in enumerate(order):
        url = known[i].sightings[0].canonical_url
        events.append((UrlDiscovered(url=url, canonical_url=url, source="test", platform="web",
                                     discovered_at=T0 + timedelta(minutes=1 + offset)),
                       Position("deepwatch.urls", 0, offset, 1_000 + offset)))
    assert asyncio.run(pipeline.process_many(events)) == ["url"] * len(order)
    assert asyncio.run(pipeline.process_many(events[:4])) == ["url"] * 4  # redelivered: counted once
    for i, record in enumerate(known):
        stored = index.get(record.media_id)
        assert stored is not None and stored.sightings[0].count == 1 + order.count(i)
        assert stored.last_seen == T0 + timedelta(minutes=1 + max(k for k, j in enumerate(order) if j == i))
        traces = [e.trace_id for e, _ in events if e.canonical_url == record.sightings[0].canonical_url]
        assert [r.trace_id for r in results[: len(order)] if r.media_id == record.media_id] == traces
        assert handled[record.sightings[0].canonical_url] == record.media_id
    index.close()


def test_chunks_by_record_keep_each_record_whole_and_in_order() -> None:
    from stream.pipeline import _chunks_by_record, _Hit

    def hit(media_id: str) -> _Hit:
        return _Hit(event=None, position=None, sighting=None, media_id=media_id)  # type: ignore[arg-type]

    hits = [hit(m) for m in "abacbdca"]
    assert _chunks_by_record(hits, 2) == [[0, 2, 7, 1, 4], [3, 6, 5]]
    assert _chunks_by_record(hits, 10) == [[0, 2, 7, 1, 4, 3, 6, 5]]
    assert _chunks_by_record([], 2) == []
