"""POST /v1/submit against the real broker: events read back from deepwatch.urls, per-URL refusals, bounds,
and 503 when Kafka is unset or unreachable (nothing published)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from deepwatch.contracts import TOPIC_URLS, UrlDiscovered, parse
from deepwatch.embedded.processes import free_port
from deepwatch.partition import partition_for
from deepwatch.settings import load_settings
from serve.api import build_api

KEYS = "submitter=s-key:submit,reader=r-key:read"
SUBMIT = {"X-API-Key": "s-key"}


def client(tmp_path: Path, **settings: object) -> TestClient:
    return TestClient(build_api(load_settings(data_dir=tmp_path, api_keys=KEYS, **settings)))


def read_back(bootstrap: str, placed: list[dict]) -> tuple[int, list[tuple[int, bytes, UrlDiscovered]]]:
    """The topic's partition count, and the messages at the (partition, offset) the API reported."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=10_000, enable_auto_commit=False)
    found = []
    try:
        partitions = len(consumer.partitions_for_topic(TOPIC_URLS))
        for item in placed:
            partition = TopicPartition(TOPIC_URLS, item["partition"])
            consumer.assign([partition])
            consumer.seek(partition, item["offset"])
            message = next(iter(consumer))
            found.append((message.partition, message.key, parse(UrlDiscovered, message.value)))
    finally:
        consumer.close()
    return partitions, found


def test_submit_publishes_valid_urls_and_reports_refused_ones(tmp_path: Path, kafka_bootstrap: str) -> None:
    api = client(tmp_path, kafka_bootstrap=kafka_bootstrap)
    urls = ["https://m.youtube.com/watch?v=dQw4w9WgXcQ&t=3s", "file:///etc/passwd",
            "https://twitter.com/a/status/1790000000000000077?s=20", "not a url at all"]
    response = api.post("/v1/submit", json={"urls": urls, "source": "tips"}, headers=SUBMIT)
    assert response.status_code == 202, response.text
    body = response.json()
    assert [(r["index"], r["url"]) for r in body["refused"]] == [(1, urls[1]), (3, urls[3])]
    assert all(r["error"] for r in body["refused"])
    published = body["published"]
    assert [p["canonical_url"] for p in published] == ["https://www.youtube.com/watch?v=dQw4w9WgXcQ",
                                                        "https://x.com/i/status/1790000000000000077"]
    partitions, events = read_back(kafka_bootstrap, published)
    for (partition, key, event), item, url in zip(events, published, (urls[0], urls[2]), strict=True):
        assert event.url == url and event.source == "tips" and event.trace_id == item["trace_id"]
        assert key == event.canonical_url.encode() == item["canonical_url"].encode()
        assert partition == partition_for(key, partitions)  # where the crawler and the CLI put this URL too
    assert events[0][2].platform == "youtube"


def test_submit_bounds_and_refusals(tmp_path: Path, kafka_bootstrap: str) -> None:
    api = client(tmp_path, kafka_bootstrap=kafka_bootstrap, api_max_submit_urls=3)
    many = api.post("/v1/submit", json={"urls": [f"https://example.com/{i}.mp4" for i in range(4)]}, headers=SUBMIT)
    assert many.status_code == 422 and many.json()["detail"][0]["loc"] == ["body", "urls"]
    assert "at most 3" in many.json()["detail"][0]["msg"]
    none_valid = api.post("/v1/submit", json={"urls": ["ftp://example.com/a", "javascript:alert(1)"]}, headers=SUBMIT)
    assert none_valid.status_code == 422
    assert [e["loc"] for e in none_valid.json()["detail"]] == [["body", "urls", 0], ["body", "urls", 1]]
    for body, loc in (({"urls": []}, ["body", "urls"]), ({}, ["body", "urls"]),
                      ({"urls": ["https://example.com/a"], "source": "Bad Source"}, ["body", "source"]),
                      ({"urls": ["https://example.com/a"], "extra": 1}, ["body", "extra"])):
        response = api.post("/v1/submit", json=body, headers=SUBMIT)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, body
    assert api.post("/v1/submit", json={"urls": ["https://example.com/a"]}).status_code == 401
    refused = api.post("/v1/submit", json={"urls": ["https://example.com/a"]}, headers={"X-API-Key": "r-key"})
    assert refused.status_code == 403 and "'submit' scope" in refused.json()["detail"]


@pytest.mark.parametrize("kafka", ["unset", "unreachable"])
def test_submit_without_kafka_is_503(tmp_path: Path, kafka: str) -> None:
    settings = {} if kafka == "unset" else {"kafka_bootstrap": f"127.0.0.1:{free_port()}"}
    api = client(tmp_path, **settings)
    start = time.monotonic()
    response = api.post("/v1/submit", json={"urls": ["https://example.com/clip.mp4"]}, headers=SUBMIT)
    assert response.status_code == 503 and "Kafka" in response.json()["detail"]
    assert time.monotonic() - start < 15  # a bounded wait, not kafka-python's default 30 s bootstrap
