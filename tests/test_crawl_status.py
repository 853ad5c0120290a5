"""What the crawler tells people: Prometheus metrics per source and `deepwatch crawl --status` from the
saved state (the running crawler's side is in test_crawl_process.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.embedded.processes import free_port
from ingest.fetcher import GuardedFetcher
from ingest.metrics import CrawlerCollector
from ingest.scheduler import Scheduler
from ingest.sources.feeds import FeedOptions, FeedSource
from ingest.sources.files import FileOptions, FileSource
from ingest.state import StateStore
from tests.ingest_support import Published, Site


def _polled(site: Site, fetcher: GuardedFetcher, data_dir: Path) -> Scheduler:
    """A scheduler whose file source found two URLs and whose feed source failed twice."""
    urls = data_dir / "urls.txt"
    urls.write_text("https://a.example/1.mp4\nhttps://b.example/2.mp4\nnot a url\n")
    site.put("/feed.xml", "down", status=500)
    scheduler = Scheduler(StateStore.in_data_dir(data_dir), fetcher, Published(), wall=lambda: 1_000_000.0)
    scheduler.add(FileSource("batch", FileOptions(path=str(urls))), interval_s=60)
    scheduler.add(FeedSource("broken", FeedOptions(url=f"{site.base}/feed.xml")), interval_s=60, jitter=0)
    for name in ("batch", "broken", "broken"):
        scheduler.poll_once(name)
    return scheduler


def _samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("source", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_per_source(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    scheduler = _polled(site, fetcher, tmp_path)
    registry = CollectorRegistry()
    now = [1_000_090.0]
    registry.register(CrawlerCollector(scheduler, wall=lambda: now[0]))
    samples = _samples(generate_latest(registry).decode())
    assert samples[("deepwatch_crawler_discovered_total", "batch")] == 2
    assert samples[("deepwatch_crawler_published_total", "batch")] == 2
    assert samples[("deepwatch_crawler_errors_total", "batch")] == 0
    assert samples[("deepwatch_crawler_errors_total", "broken")] == 2
    assert samples[("deepwatch_crawler_published_total", "broken")] == 0
    assert samples[("deepwatch_crawler_consecutive_failures", "broken")] == 2
    assert samples[("deepwatch_crawler_backoff_seconds", "broken")] == 180  # 60 s doubled twice, less 60
    assert samples[("deepwatch_crawler_seconds_since_last_success", "batch")] == 90
    assert ("deepwatch_crawler_seconds_since_last_success", "broken") not in samples  # never succeeded
    now[0] += 30  # computed when scraped, not when the poll ended
    assert (
        _samples(generate_latest(registry).decode())[("deepwatch_crawler_seconds_since_last_success", "batch")] == 120
    )


def test_status_from_saved_state_when_no_crawler_runs(
    site: Site, fetcher: GuardedFetcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPWATCH_CRAWLER_PORT", str(free_port()))  # nothing listens there
    runner = CliRunner()
    result = runner.invoke(app, ["crawl", "--status", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["running"] is False and document["sources"] == {}
    assert "no running crawler" in document["message"] and "no crawl state" in document["message"]

    _polled(site, fetcher, tmp_path)
    result = runner.invoke(app, ["crawl", "--status", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["running"] is False and document["from"] == str(tmp_path / "crawler")
    batch, broken = document["sources"]["batch"], document["sources"]["broken"]
    assert (batch["discovered"], batch["published"], batch["last_error"]) == (2, 2, None)
    assert batch["last_run_at"] == batch["last_success_at"] == "1970-01-12T13:46:40+00:00"
    assert broken["last_success_at"] is None and "500" in broken["last_error"]
    assert (broken["failures"], broken["consecutive_failures"], broken["backoff_s"]) == (2, 2, 180)
    assert broken["next_run_at"] == "1970-01-12T13:50:40+00:00"  # 240 s after the last poll

    table = runner.invoke(app, ["crawl", "--status", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0 and "broken" in table.output and "saved state" in table.output
