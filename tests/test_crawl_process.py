"""The crawler process end to end: `deepwatch crawl` polls a feed on a local HTTP server and a URL
file, and the events land in the real broker keyed by canonical URL; its /metrics and
`deepwatch crawl --status` report them; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from deepwatch.contracts import TOPIC_URLS, UrlDiscovered, parse

FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>first clip</title><link>https://youtu.be/crawlAAAAA1?si=x</link></item>
<item><title>second clip</title><link>https://www.youtube.com/shorts/crawlAAAAA2</link></item>
</channel></rss>"""


@pytest.fixture
def feed_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = FEED.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/feed.xml"
    server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_crawl_publishes_what_its_sources_find(kafka_bootstrap: str, feed_url: str, tmp_path: Path) -> None:
    urls_file = tmp_path / "urls.txt"
    urls_file.write_text("https://x.com/someone/status/1790000000000000777/video/1\n")
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f"sources:\n"
        f"  - {{name: local-feed, kind: feed, interval_s: 3600, jitter: 0, options: {{url: '{feed_url}'}}}}\n"
        f"  - {{name: batch, kind: file, interval_s: 3600, jitter: 0, options: {{path: '{urls_file}'}}}}\n"
    )
    port = _free_port()
    env = {**os.environ, "DEEPWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "DEEPWATCH_CRAWLER_PORT": str(port),
           "DEEPWATCH_FETCH_ALLOW_NETWORKS": "127.0.0.1/32"}
    process = subprocess.Popen(
        [sys.executable, "-m", "deepwatch", "crawl", "--sources", str(sources), "--data-dir", str(tmp_path / "data")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        expected = {
            "https://www.youtube.com/watch?v=crawlAAAAA1",
            "https://www.youtube.com/watch?v=crawlAAAAA2",
            "https://x.com/i/status/1790000000000000777",
        }
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=30_000)
        partitions = [TopicPartition(TOPIC_URLS, p) for p in consumer.partitions_for_topic(TOPIC_URLS) or [0]]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        found: dict[str, UrlDiscovered] = {}
        for message in consumer:
            key = message.key.decode() if message.key else ""
            if key in expected:
                event = parse(UrlDiscovered, message.value)  # validates against the contract
                assert event.canonical_url == key
                found[key] = event
                if len(found) == len(expected):
                    break
        consumer.close()
        assert set(found) == expected
        assert {found[k].source for k in found} == {"local-feed", "batch"}

        status = {}
        for _ in range(50):
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert set(status["by_source"]) == {"local-feed", "batch"}
        assert all(s["last_error"] is None for s in status["by_source"].values()), status

        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'deepwatch_crawler_published_total{source="local-feed"} 2.0' in metrics
        assert 'deepwatch_crawler_published_total{source="batch"} 1.0' in metrics
        assert 'deepwatch_crawler_seconds_since_last_success{source="batch"}' in metrics

        # `crawl --status` finds the running crawler on its port, and checks it uses this data directory
        probe = subprocess.run(
            [sys.executable, "-m", "deepwatch", "crawl", "--status", "--json", "--data-dir", str(tmp_path / "data")],
            env=env, capture_output=True, timeout=60,
        )
        assert probe.returncode == 0, probe.stderr.decode()
        live = json.loads(probe.stdout)
        assert live["running"] is True and live["pid"] == process.pid
        assert live["sources"]["local-feed"]["published"] == 2 and live["sources"]["batch"]["discovered"] == 1
        other = subprocess.run(
            [sys.executable, "-m", "deepwatch", "crawl", "--status", "--json", "--data-dir", str(tmp_path / "other")],
            env=env, capture_output=True, timeout=60,
        )
        assert json.loads(other.stdout)["running"] is False  # another data directory's crawler is not ours
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, process.stdout.read().decode() if process.stdout else ""
