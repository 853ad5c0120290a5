"""The real broker and the real Faust worker: poison messages are dead-lettered, never blocking."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deepwatch.contracts import TOPIC_DLQ, TOPIC_URLS, DeadLetter, UrlDiscovered, parse
from deepwatch.embedded.broker import ensure_topics, kafka_reachable
from deepwatch.embedded.processes import ManagedProcess, free_port, wait_until
from tests.ingest_support import Site


@pytest.fixture(scope="module")
def kafka_bootstrap(own_kafka: str) -> str:
    """This module's own broker: its worker consumes every URL on the topics, other tests' included."""
    return own_kafka


def test_keyed_messages_keep_their_partition(kafka_bootstrap: str) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    partitions = {producer.send("deepwatch.results", key=b"same-key", value=b"%d" % i).get(10).partition
                  for i in range(5)}
    producer.close()
    assert len(partitions) == 1


def test_topics_are_created_once(kafka_bootstrap: str) -> None:
    assert ensure_topics(kafka_bootstrap, partitions=4) == []  # the fixture created them already
    assert ensure_topics(kafka_bootstrap, partitions=2, names=["deepwatch.test-extra"]) == ["deepwatch.test-extra"]
    assert kafka_reachable(kafka_bootstrap)
    assert not kafka_reachable(f"127.0.0.1:{free_port()}", timeout_s=1)


@pytest.fixture
def worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[ManagedProcess]:
    port = free_port()
    env = dict(os.environ)
    env.update({
        "DEEPWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DEEPWATCH_DATA_DIR": str(tmp_path),
        "DEEPWATCH_WORKER_WEB_PORT": str(port),
        "DEEPWATCH_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
    })
    proc = ManagedProcess("worker", [sys.executable, "-m", "deepwatch", "worker"], tmp_path / "worker.log", env=env)
    proc.start()
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(lambda: healthy() or not proc.alive(), 60), proc.last_lines()
        assert proc.alive(), proc.last_lines()
        proc.web_port = port  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.stop(grace_s=10)


def test_poison_messages_go_to_the_dlq_and_the_partition_moves_on(
    kafka_bootstrap: str, worker: ManagedProcess, site: Site
) -> None:
    # a valid event whose URL is gone (the loopback site answers 404): dead-lettered by the fetch stage
    good = UrlDiscovered(url=f"{site.base}/v.mp4", canonical_url=f"{site.base}/v.mp4", source="test", platform="web")
    key = good.key()  # one key: poison and good message share a partition, in this order
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    poison = [b"{not json", json.dumps({**json.loads(good.to_json()), "url": "file:///etc/passwd"}).encode()]
    sent = [producer.send(TOPIC_URLS, key=key, value=v).get(10) for v in [*poison, good.to_json()]]
    producer.close()

    consumer = KafkaConsumer(TOPIC_DLQ, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=60_000)
    letters = []
    for message in consumer:
        letter = parse(DeadLetter, message.value)
        # the broker is shared with other tests: their letters may sit at the same partition and offsets
        if letter.key == key.decode() and letter.offset in {s.offset for s in sent}:
            letters.append(letter)
        if len(letters) == 3:
            break
    consumer.close()
    assert [lt.payload.encode() for lt in letters[:2]] == poison
    assert all(lt.stage == "validate" and lt.error_type == "ContractError" for lt in letters[:2])
    assert "not valid JSON" in letters[0].message
    assert "url" in letters[1].message and letters[1].key == key.decode()
    assert (letters[2].stage, letters[2].error_type) == ("fetch", "NotFound") and "404" in letters[2].message
    assert site.hits and all(hit == "/v.mp4" for hit in site.hits)

    # The partition moves on: the group commits past all three.
    tp = TopicPartition(TOPIC_URLS, sent[0].partition)
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="deepwatch-stream", enable_auto_commit=False)
    try:
        assert wait_until(lambda: (probe.committed(tp) or 0) > sent[-1].offset, 30, interval_s=0.5)
    finally:
        probe.close()
    metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5).text  # type: ignore[attr-defined]
    assert 'deepwatch_stream_dead_letters_total{stage="validate"} 2.0' in metrics
    assert 'deepwatch_stream_dead_letters_total{stage="fetch"} 1.0' in metrics
