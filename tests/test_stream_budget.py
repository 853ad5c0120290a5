"""A worker whose batches outlast their time budget hands the rest back and reads it again, losing and
doubling nothing.

The worker fetches nothing while it handles a batch, and Kafka puts a consumer that does not fetch for
``broker_max_poll_interval`` out of its group, so a batch of new media (seconds each) must not run on for
the whole of a big fetch: after ``worker_batch_budget_s`` the worker starts no new event and the consumer
seeks back to the first left (``stream.transport``). Here, on the real broker, the budget is 50 ms and a
backlog mixes URL hits, URLs that must be fetched (and fail: 404 on a loopback site) and poison messages:
every event gets one outcome, each poison message and each failed URL is dead-lettered once, and the index
counts each hit once.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from bench.stream import counted_sightings, publish, record_known
from deepwatch.contracts import TOPIC_DLQ, TOPIC_RESULTS, TOPIC_URLS, DeadLetter, ScoredMedia, UrlDiscovered, parse
from deepwatch.embedded.broker import ensure_topics
from deepwatch.embedded.processes import free_port
from tests.ingest_support import Site
from tests.stream_support import log_lines, worker

T = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_kafka: str) -> str:
    return own_kafka


def test_a_batch_over_its_budget_is_finished_by_later_fetches(kafka_bootstrap: str, site: Site,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_topics(kafka_bootstrap, partitions=2)
    records = record_known(data / "index.sqlite3", 10)

    events: list[UrlDiscovered] = []
    payloads: list[tuple[bytes, bytes]] = []
    poison = 0
    for i in range(60):
        if i % 10 == 3:  # a poison message: not an event
            payloads.append((f"poison-{i}".encode(), b'{"url": "not a url"}'))
            poison += 1
            continue
        # every fifth a URL never seen (fetched, and it fails: 404), the others reposts of known URLs
        url = f"{site.base}/gone-{i}.mp4" if i % 5 == 1 else records[i % len(records)].sightings[0].canonical_url
        e = UrlDiscovered(url=url, canonical_url=url, source="test", platform="web", discovered_at=T)
        events.append(e)
        payloads.append((e.key(), e.to_json()))
    misses = [e for e in events if "/gone-" in e.url]
    publish(kafka_bootstrap, TOPIC_URLS, payloads)

    outcomes = KafkaConsumer(TOPIC_RESULTS, TOPIC_DLQ, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest")
    results: list[ScoredMedia] = []
    letters: list[DeadLetter] = []
    port = free_port()
    proc = worker(kafka_bootstrap, data, f"http://127.0.0.1:{free_port()}", "unused", worker_batch_budget_s="0.05",
                  worker_fetch_attempts="1", worker_web_port=str(port)).start()
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and len(results) + len(letters) < len(events) + poison:
            assert proc.alive(), log_lines(proc)
            for batch in outcomes.poll(timeout_ms=200).values():
                for m in batch:
                    if m.topic == TOPIC_RESULTS:
                        results.append(parse(ScoredMedia, m.value))
                    else:
                        letters.append(parse(DeadLetter, m.value))
        time.sleep(2)  # anything doubled would come now
        for batch in outcomes.poll(timeout_ms=500).values():
            results += [parse(ScoredMedia, m.value) for m in batch if m.topic == TOPIC_RESULTS]
            letters += [parse(DeadLetter, m.value) for m in batch if m.topic == TOPIC_DLQ]
        counted = {(s.name, s.labels.get("stage")): s.value for family in text_string_to_metric_families(
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text) for s in family.samples}
    finally:
        proc.stop(grace_s=15)
        outcomes.close()

    log = proc.log_path.read_text(errors="replace")
    assert "the rest is read again" in log  # the budget did cut batches short
    # a count per outcome for each batch, not a line per event (worker_log_events is off by default)
    assert re.search(r"handled \d+ events: \d+ url\b", log) and not re.search(r"deepwatch\.urls\[\d+\]@\d+ ", log)
    assert sorted(r.trace_id for r in results) == sorted(e.trace_id for e in events if e not in misses)
    assert sorted(d.stage for d in letters) == ["fetch"] * len(misses) + ["validate"] * poison
    fetched = sorted(parse(UrlDiscovered, d.payload).url for d in letters if d.stage == "fetch")
    assert fetched == sorted(e.url for e in misses)
    assert sorted(site.hits) == sorted(e.url.removeprefix(site.base) for e in misses)  # each fetched once
    assert counted_sightings(data / "index.sqlite3", records) == len(records) + len(events) - len(misses)
    # records read again after a cut are counted once, when handled
    assert counted[("deepwatch_stream_events_total", "validate")] == len(payloads)
    assert counted[("deepwatch_stream_events_total", "url_dedup")] == len(events)
