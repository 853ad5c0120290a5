"""`deepwatch bench ingest --quick` keeps working: the JSON of ../shared/BENCHMARKS.md, and every event
it counts really is in the topic, keyed by its canonical URL and valid against the contract."""

from __future__ import annotations

import uuid

from kafka import KafkaConsumer, TopicPartition

from bench.ingest import run
from deepwatch.contracts import UrlDiscovered, parse


def test_quick_bench_publishes_what_it_measures(kafka_bootstrap: str) -> None:
    topic = f"bench-test-{uuid.uuid4().hex[:8]}"
    document = run(quick=True, bootstrap=kafka_bootstrap, topic=topic)

    assert document["benchmark"] == "ingest" and set(document["machine"]) == {"cpus", "python", "gpu"}
    (entry,) = document["results"]
    assert entry["unit"] == "events/s" and entry["better"] == "higher" and entry["target"] == 10_000
    assert entry["value"] > 0 and entry["peer"]["value"] > 0 and "kafka-python" in entry["peer"]["name"]
    assert entry["ratio"] == round(entry["value"] / entry["peer"]["value"], 4)
    assert entry["meets_target"] is (entry["value"] >= 10_000)
    params = entry["params"]
    assert params["repeats"] >= 2 and len(params["runs_ours"]) == len(params["runs_peer"]) == params["repeats"]
    expected = params["events_per_run"] * params["repeats"]
    assert params["verified_in_topic"] == expected

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=10_000)
    consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []])
    consumer.seek_to_beginning()
    keys = set()
    for message in consumer:
        event = parse(UrlDiscovered, message.value)
        assert message.key == event.key()
        if event.source != "bench":  # the warm-up event
            keys.add(message.key)
        if len(keys) == expected:
            break
    consumer.close()
    assert len(keys) == expected  # every run's URLs are distinct, and all of them arrived
