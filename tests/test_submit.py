"""`deepwatch submit`: canonical events, printed on --dry-run, published keyed by canonical URL."""

from __future__ import annotations

import json

from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import TOPIC_URLS, UrlDiscovered, parse
from deepwatch.embedded.processes import free_port

runner = CliRunner()


def test_dry_run_prints_canonical_events_and_refuses_bad_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["submit", "--dry-run", "--json", "--source", "tips", "--data-dir", str(tmp_path),
                                 "https://m.youtube.com/watch?v=dQw4w9WgXcQ&t=3s", "file:///etc/passwd"])
    assert result.exit_code == 2  # one URL was refused
    document = json.loads(result.stdout)
    assert document["published"] == 0 and document["dry_run"] is True
    [event] = [parse(UrlDiscovered, e) for e in document["events"]]
    assert event.canonical_url == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert (event.platform, event.source) == ("youtube", "tips")
    assert document["errors"][0]["url"] == "file:///etc/passwd"


def test_submit_publishes_keyed_by_canonical_url(kafka_bootstrap: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DEEPWATCH_KAFKA_BOOTSTRAP", kafka_bootstrap)
    urls = ["https://twitter.com/a/status/1790000000000000042?s=20", "https://x.com/b/status/1790000000000000042/video/1"]
    result = runner.invoke(app, ["submit", "--json", "--data-dir", str(tmp_path), *urls])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["published"] == 2

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=10_000)
    partitions = [TopicPartition(TOPIC_URLS, p) for p in consumer.partitions_for_topic(TOPIC_URLS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    ours = []
    for message in consumer:
        if message.key == b"https://x.com/i/status/1790000000000000042":
            ours.append(message)
            if len(ours) == len(urls):
                break
    consumer.close()
    assert [parse(UrlDiscovered, m.value).url for m in ours] == urls
    assert len({m.partition for m in ours}) == 1  # same canonical URL, same partition


def test_submit_with_no_broker_is_an_error_naming_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # bound and let go: nothing answers there
    monkeypatch.setenv("DEEPWATCH_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    monkeypatch.setenv("DEEPWATCH_KAFKA_PUBLISH_TIMEOUT_S", "1")
    result = runner.invoke(app, ["submit", "--json", "--data-dir", str(tmp_path), "https://youtu.be/dQw4w9WgXcQ"])
    assert result.exit_code == 1
    assert f"no Kafka broker at 127.0.0.1:{port}" in json.loads(result.stdout)["error"]
