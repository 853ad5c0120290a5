"""robots.txt for page crawling, against a real loopback site: disallowed pages and sitemaps are skipped
and counted (not errors), the file is cached per origin for its TTL, and the switch turns it off."""

from __future__ import annotations

from pathlib import Path

from deepwatch.media.errors import Transient
from deepwatch.settings import load_settings
from ingest.crawler import SourceConfig, SourcesFile
from ingest.fetcher import GuardedFetcher
from ingest.robots import RobotsCache, min_interval_s, origin_of, rules_from_text
from ingest.scheduler import Scheduler, scheduler_for
from ingest.sources import install
from ingest.sources.pages import PageOptions, PageSource
from ingest.state import StateStore
from tests.ingest_support import Published, Site

ROBOTS = """# comments and other agents' rules are ignored
User-agent: otherbot
Disallow: /

User-agent: *
Disallow: /private/
Disallow: /sitemap-secret.xml
"""
NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _pages(site: Site) -> None:
    site.put("/robots.txt", ROBOTS, "text/plain")
    site.put("/open/1", '<video src="/v/open.mp4"></video>')
    site.put("/private/2", '<video src="/v/private.mp4"></video>')


def test_rules_from_text_follow_the_agent_groups() -> None:
    rules = rules_from_text(ROBOTS)
    assert rules.can_fetch("deepwatch-crawler/1", "https://a.example/open")
    assert not rules.can_fetch("deepwatch-crawler/1", "https://a.example/private/x")
    assert not rules.can_fetch("otherbot/2", "https://a.example/open")
    assert origin_of("https://A.example:8443/x?y") == "https://a.example:8443"
    assert origin_of("ftp://a.example/") is None


def test_disallowed_pages_are_skipped_and_counted(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    _pages(site)
    clock = Clock()
    robots = RobotsCache(ttl_s=100, clock=clock)
    source = PageSource("pages", PageOptions(urls=[f"{site.base}/open/1", f"{site.base}/private/2"]), robots)
    published = Published()
    scheduler = Scheduler(StateStore.in_data_dir(tmp_path), fetcher, published)
    scheduler.add(source, interval_s=60)
    scheduler.poll_once("pages")
    assert published.urls() == [f"{site.base}/v/open.mp4"]
    assert "/private/2" not in site.hits
    status = scheduler.status()["pages"]
    assert status["robots_disallowed"] == 1 and status["last_error"] is None and status["failures"] == 0

    scheduler.poll_once("pages")  # within the TTL: robots.txt is not asked again
    assert site.hits.count("/robots.txt") == 1 and robots.fetches == 1
    assert scheduler.status()["pages"]["robots_disallowed"] == 2  # skipped again, counted again

    site.put("/robots.txt", "User-agent: *\nDisallow:\n", "text/plain")  # the site opens up
    clock.now = 101  # past the TTL
    scheduler.poll_once("pages")
    assert site.hits.count("/robots.txt") == 2
    assert published.urls() == [f"{site.base}/v/open.mp4", f"{site.base}/v/private.mp4"]


def test_sitemaps_are_checked_too(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    _pages(site)
    site.put(
        "/sitemap.xml",
        f"<sitemapindex {NS}><sitemap><loc>{site.base}/sitemap-secret.xml</loc></sitemap>"
        f"<sitemap><loc>{site.base}/sitemap-open.xml</loc></sitemap></sitemapindex>",
    )
    site.put(
        "/sitemap-open.xml",
        f"<urlset {NS}><url><loc>{site.base}/open/1</loc></url><url><loc>{site.base}/private/2</loc></url></urlset>",
    )
    site.put("/sitemap-secret.xml", f"<urlset {NS}><url><loc>{site.base}/open/9</loc></url></urlset>")
    source = PageSource("maps", PageOptions(sitemap=f"{site.base}/sitemap.xml"), RobotsCache())
    poll = source.poll(StateStore(tmp_path).load("maps"), fetcher)
    assert [f.url for f in poll.found] == [f"{site.base}/v/open.mp4"]
    assert sorted(poll.disallowed) == [f"{site.base}/private/2", f"{site.base}/sitemap-secret.xml"]
    assert "/sitemap-secret.xml" not in site.hits and "/private/2" not in site.hits


def test_unreachable_robots_disallows_and_missing_robots_allows(
    site: Site, fetcher: GuardedFetcher, tmp_path: Path
) -> None:
    _pages(site)
    site.put("/robots.txt", "busy", status=503)
    source = PageSource("pages", PageOptions(urls=[f"{site.base}/open/1"]), RobotsCache())
    poll = source.poll(StateStore(tmp_path).load("pages"), fetcher)
    assert poll.found == [] and poll.disallowed == [f"{site.base}/open/1"]
    assert any("robots.txt unreachable" in reason and Transient.__name__ in reason for reason in poll.dropped)
    assert "/open/1" not in site.hits

    del site.routes["/robots.txt"]  # 404: no rules, everything allowed
    poll = PageSource("pages", PageOptions(urls=[f"{site.base}/open/1"]), RobotsCache()).poll(
        StateStore(tmp_path).load("pages"), fetcher
    )
    assert [f.url for f in poll.found] == [f"{site.base}/v/open.mp4"] and poll.disallowed == []


def test_robots_can_be_switched_off(site: Site, fetcher: GuardedFetcher, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _pages(site)
    urls = [f"{site.base}/private/2"]
    per_source = PageSource("pages", PageOptions(urls=urls, robots=False), RobotsCache())
    assert [f.url for f in per_source.poll(StateStore(tmp_path).load("x"), fetcher).found] == [
        f"{site.base}/v/private.mp4"
    ]
    assert "/robots.txt" not in site.hits

    monkeypatch.setattr("ingest.crawler.SOURCE_KINDS", {})
    install()
    config = SourcesFile(sources=[SourceConfig(name="pages", kind="page", options={"urls": urls})])
    for setting, honoured in ((True, True), (False, False)):
        scheduler = scheduler_for(load_settings(data_dir=str(tmp_path), crawler_robots=setting), config, print)
        scheduler.fetcher.close()  # type: ignore[attr-defined]
        assert (scheduler.entries["pages"].source.robots is not None) is honoured  # type: ignore[attr-defined]


def test_crawl_delay_and_request_rate_pace_the_host(site: Site, fetcher: GuardedFetcher) -> None:
    site.put("/robots.txt", "User-agent: *\nCrawl-delay: 2\nRequest-rate: 1/5\nDisallow: /private/\n", "text/plain")
    paced: list[tuple[str, float]] = []
    cache = RobotsCache(pace=lambda host, seconds: paced.append((host, seconds)))
    assert cache.refusal(f"{site.base}/open/1", fetcher) is None
    assert cache.refusal(f"{site.base}/open/2", fetcher) is None  # cached: told once
    assert paced == [("127.0.0.1", 5.0)]  # the slower of the two asks
    assert min_interval_s(rules_from_text(ROBOTS), "deepwatch-crawler") is None
