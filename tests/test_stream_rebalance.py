"""Two workers in one group share the partitions; when one is SIGKILLed the other takes its partitions over
and every URL is still processed, each item scored once.

Real ``deepwatch worker`` processes (distinct web ports and data directories, one index and one object
store, as two pods sharing the production index and store would), this module's own broker, the scoring
API over real HTTP with the real MesoNet weights, and small pictures from a loopback site.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from kafka import KafkaProducer

from deepwatch.contracts import TOPIC_URLS, UrlDiscovered
from deepwatch.embedded.processes import ManagedProcess, wait_until
from storage.index_sqlite import SqliteIndex
from tests.ingest_support import Site
from tests.stream_support import Outcomes, blotches, jpeg, scored_total, scoring_api, worker

KEY = "rebalance-" + os.urandom(6).hex()
HANDLED = re.compile(r"deepwatch\.urls\[(\d+)\]@\d+ (\S+): (\w[\w-]*)")


@pytest.fixture(scope="module")
def kafka_bootstrap(own_kafka: str) -> str:
    return own_kafka


def handled(proc: ManagedProcess) -> list[tuple[int, str, str]]:
    """(partition, canonical URL, outcome) of every event the worker logged as done."""
    return [(int(p), url, outcome) for p, url, outcome in HANDLED.findall(proc.log_path.read_text(errors="replace"))]


def ready_count(proc: ManagedProcess) -> int:
    return proc.log_path.read_text(errors="replace").count("Worker ready") if proc.log_path.is_file() else 0


@pytest.mark.slow
def test_two_workers_take_over(kafka_bootstrap: str, site: Site, tmp_path: Path, models_dir: Path) -> None:
    shared = tmp_path / "shared"
    paths = [f"/p{i}.jpg" for i in range(12)]
    for i, path in enumerate(paths):
        site.put(path, jpeg(blotches(100 + i), quality=80), "image/jpeg")

    def ev(path: str) -> UrlDiscovered:
        return UrlDiscovered(url=site.base + path, canonical_url=site.base + path, source="rebalance",
                             platform="web")

    first = [ev(p) for p in paths[:8]]
    second = [ev(p) for p in paths[8:]] + [ev(p) for p in paths[:8]]
    common = {"index_sqlite_path": str(shared / "index.sqlite3"), "store_local_dir": str(shared / "objects"),
              "kafka_session_timeout_s": "3", "kafka_heartbeat_s": "1", "worker_log_events": "true"}

    with scoring_api(shared, models_dir, KEY) as api:
        before = scored_total(api)
        one = worker(kafka_bootstrap, tmp_path / "one", api, KEY, "one", **common)
        two = worker(kafka_bootstrap, tmp_path / "two", api, KEY, "two", **common)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        outcomes = Outcomes(kafka_bootstrap)
        try:
            one.start()
            assert wait_until(lambda: ready_count(one) >= 1, 30), one.last_lines(30)
            two.start()  # joining makes the group rebalance: both are ready once it is done
            assert wait_until(lambda: ready_count(two) >= 1 and ready_count(one) >= 2, 30), (
                one.last_lines(30), two.last_lines(30))
            for e in first:
                producer.send(TOPIC_URLS, key=e.key(), value=e.to_json())
            producer.flush()
            outcomes.wait(first, 60, one, two)
            parts_two = {p for p, _, _ in handled(two)}
            two.kill()
            assert wait_until(lambda: not two.alive(), 5)
            two.reap()
            done_by_one = len(handled(one))
            for e in second:
                producer.send(TOPIC_URLS, key=e.key(), value=e.to_json())
            producer.flush()
            outcomes.wait(second, 60, one)
            scorings = scored_total(api) - before
        finally:
            producer.close()
            outcomes.close()
            one.stop(grace_s=10)
            two.stop(grace_s=10)

    parts_one = {p for p, _, _ in handled(one)[:done_by_one]}
    # the partitions were shared while both lived, and the survivor then took the dead one's over
    assert parts_one and parts_two and not parts_one & parts_two, (parts_one, parts_two)
    taken_over = {p for p, _, _ in handled(one)[done_by_one:]}
    assert parts_two <= taken_over, (parts_two, taken_over)
    # every URL processed, each distinct picture scored once, each repeat a sighting on its record
    assert {e.trace_id for e in first + second} <= set(outcomes.results)
    assert scorings == len(paths)
    index = SqliteIndex(shared / "index.sqlite3")
    try:
        counts = {}
        for e in first + second:
            record = index.get(outcomes.results[e.trace_id].media_id)
            assert record is not None
            counts.update({s.canonical_url.removeprefix(site.base): s.count for s in record.sightings})
    finally:
        index.close()
    assert counts == {p: 2 for p in paths[:8]} | {p: 1 for p in paths[8:]}
