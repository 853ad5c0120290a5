"""Crawler sources end to end: a real loopback HTTP server, real httpx through the SSRF guard.

Each source finds exactly the right URLs, its state survives a restart (a new store reading the
same directory), only new items are found later, and a broken source is isolated and reports its error.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from deepwatch.contracts import ContractError, UrlDiscovered
from deepwatch.media.errors import Blocked, NotFound, TooLarge, Transient
from deepwatch.media.guard import AddressPolicy
from deepwatch.settings import load_settings
from ingest.crawler import SourceConfig, SourcesFile, load_sources
from ingest.fetcher import GuardedFetcher
from ingest.scheduler import Scheduler, scheduler_for
from ingest.sources import KINDS, build, install
from ingest.sources.feeds import FeedOptions, FeedSource
from ingest.sources.files import FileOptions, FileSource
from ingest.sources.pages import PageOptions, PageSource
from ingest.sources.reddit import RedditOptions, RedditSource
from ingest.sources.ytdlp_listing import YtdlpListingSource, YtdlpOptions
from ingest.state import StateStore
from tests.ingest_support import LOOPBACK, Published, Site, rss


def _restart(tmp_path: Path, fetcher: GuardedFetcher, source: object) -> tuple[Scheduler, Published]:
    """A fresh scheduler and store over the same data directory, as after a process restart."""
    published = Published()
    scheduler = Scheduler(StateStore.in_data_dir(tmp_path), fetcher, published)
    scheduler.add(source, interval_s=60)  # type: ignore[arg-type]
    return scheduler, published


def test_feed_finds_exactly_its_urls_and_survives_restart(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    site.put("/feed.xml", rss(("one", "/v/1"), ("two", "https://vimeo.com/76979871")), "application/rss+xml")
    source = FeedSource("feed", FeedOptions(url=f"{site.base}/feed.xml"))
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("feed")
    assert published.urls() == [f"{site.base}/v/1", f"{site.base}/v/1.mp4", "https://vimeo.com/76979871",
                                "https://vimeo.com/76979871.mp4"]
    assert published.events[0].hints is not None and published.events[0].hints.title == "one"
    assert published.events[2].platform == "vimeo" and published.events[0].source == "feed"

    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("feed")
    assert published.urls() == []  # nothing replayed after the restart

    site.put("/feed.xml", rss(("three", "/v/3"), ("one", "/v/1")), "application/rss+xml")
    scheduler.poll_once("feed")
    assert published.urls() == [f"{site.base}/v/3", f"{site.base}/v/3.mp4"]


def _listing(after: str | None, *ids: str) -> str:
    children = [{"kind": "t3", "data": {"id": i, "title": i, "url": f"https://www.youtube.com/watch?v={i:_<11}",
                                        "permalink": f"/r/s/comments/{i}/"}} for i in ids]
    return json.dumps({"kind": "Listing", "data": {"after": after, "children": children}})


def test_reddit_follows_after_until_caught_up(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    source = RedditSource("rd", RedditOptions(subreddit="videos", base_url=site.base, limit=2, max_pages=5))
    first, second = "/r/videos/new.json?limit=2&raw_json=1", "/r/videos/new.json?limit=2&raw_json=1&after=t3_b"
    site.put(first, _listing("t3_b", "a", "b"), "application/json")
    site.put(second, _listing(None, "c"), "application/json")
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("rd")
    assert published.urls() == [f"https://www.youtube.com/watch?v={i:_<11}" for i in "abc"]
    assert site.hits == [first, second]

    site.put(first, _listing("t3_a", "n", "a"), "application/json")  # one new post on top
    site.hits.clear()
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("rd")
    assert published.urls() == ["https://www.youtube.com/watch?v=n__________"]
    assert site.hits == [first]  # page one held a seen post: caught up, no further pages


PAGE = """<html><head><meta property="og:video" content="/og.mp4"></head><body>
<video><source src="clip.webm"></video><img src="/big.jpg" width="800" height="600"><img src="/tiny.gif" width=1 height=1>
<a href="https://www.tiktok.com/@u/video/7234567890123456789">tt</a><a href="/about">about</a></body></html>"""


def test_pages_and_sitemap_within_one_domain(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    other = site.base.replace("127.0.0.1", "localhost")  # same server, another host name: outside the domain
    ns = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
    site.put("/sitemap.xml", f"<sitemapindex {ns}><sitemap><loc>{site.base}/sm-pages.xml</loc></sitemap>"
                             f"<sitemap><loc>{other}/sm-other.xml</loc></sitemap></sitemapindex>", "application/xml")
    site.put("/sm-pages.xml", f"<urlset {ns}><url><loc>{site.base}/p/1</loc></url><url><loc>{site.base}/p/2</loc></url>"
                              f"<url><loc>{other}/p/9</loc></url></urlset>", "application/xml")
    site.put("/p/1", PAGE)
    site.put("/p/2", '<html><img src="https://cdn.example/photo.jpg" width="300" height="300"></html>')
    site.put("/p/9", '<video src="/never.mp4"></video>')
    source = PageSource("pages", PageOptions(sitemap=f"{site.base}/sitemap.xml", max_depth=1))
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("pages")
    assert sorted(published.urls()) == sorted([
        f"{site.base}/og.mp4", f"{site.base}/p/clip.webm", f"{site.base}/big.jpg",
        "https://www.tiktok.com/@u/video/7234567890123456789", "https://cdn.example/photo.jpg",
    ])
    assert "/p/9" not in site.hits and "/sm-other.xml" not in site.hits

    depth0 = PageSource("shallow", PageOptions(sitemap=f"{site.base}/sitemap.xml", max_depth=0))
    assert depth0.poll(StateStore(tmp_path / "x").load("shallow"), fetcher).found == []

    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("pages")
    assert published.urls() == []


def test_file_source_resumes_at_its_offset(fetcher: GuardedFetcher, tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text('https://a.example/1\n{"url": "https://b.example/2", "hints": {"title": "B"}}\nhttps://c.exa')
    source = FileSource("batch", FileOptions(path=str(urls)))
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("batch")
    assert published.urls() == ["https://a.example/1", "https://b.example/2"]

    with urls.open("a") as f:
        f.write("mple/3\nftp://nope.example/\n")
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("batch")
    assert published.urls() == ["https://c.example/3"]  # the half-written line, once complete
    assert StateStore.in_data_dir(tmp_path).load("batch").cursor == str(urls.stat().st_size)

    stdin = FileSource("stdin", FileOptions(path="-"), stdin=io.BytesIO(b"https://d.example/4\nhttps://e.example/5"))
    assert [f.url for f in stdin.poll(StateStore(tmp_path / "s").load("stdin"), fetcher).found] == [
        "https://d.example/4", "https://e.example/5"]


def test_ytdlp_listing_newest_first_stops_at_seen(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    # yt-dlp's generic extractor lists an RSS feed as a playlist: a real flat listing without the internet
    site.put("/channel.rss", rss(("two", "/v/2"), ("one", "/v/1")), "application/rss+xml")
    source = YtdlpListingSource("chan", YtdlpOptions(url=f"{site.base}/channel.rss", timeout_s=60))
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("chan")
    # yt-dlp's generic RSS listing takes each item's enclosure
    assert published.urls() == [f"{site.base}/v/2.mp4", f"{site.base}/v/1.mp4"]
    assert published.events[0].hints is not None and published.events[0].hints.title == "two"

    site.put("/channel.rss", rss(("four", "/v/4"), ("three", "/v/3"), ("two", "/v/2"), ("one", "/v/1")))
    scheduler, published = _restart(tmp_path, fetcher, source)
    scheduler.poll_once("chan")
    assert published.urls() == [f"{site.base}/v/4.mp4", f"{site.base}/v/3.mp4"]
    assert StateStore.in_data_dir(tmp_path).load("chan").cursor == f"{site.base}/v/4.mp4"

    # newest first: the listing stops at the first seen entry, even if an older unseen one follows it
    site.put("/channel.rss", rss(("five", "/v/5"), ("four", "/v/4"), ("zero", "/v/0")))
    scheduler.poll_once("chan")
    assert published.urls()[2:] == [f"{site.base}/v/5.mp4"]

    with GuardedFetcher(AddressPolicy()) as closed, pytest.raises(Blocked, match="loopback"):
        source.poll(StateStore(tmp_path / "x").load("chan"), closed)
    site.put("/missing.rss", "", status=404)
    with pytest.raises(NotFound):
        YtdlpListingSource("gone", YtdlpOptions(url=f"{site.base}/missing.rss")).poll(
            StateStore(tmp_path / "y").load("gone"), fetcher)


def test_broken_sources_are_isolated_and_report_errors(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    site.put("/good.xml", rss(("ok", "/v/ok")), "application/rss+xml")
    site.put("/boom.xml", "server error", status=500)
    site.put("/garbage.xml", b"\x00\x01<rss><item>", "application/rss+xml")
    published = Published()
    scheduler = Scheduler(StateStore.in_data_dir(tmp_path), fetcher, published)
    for name, path in (("boom", "/boom.xml"), ("garbage", "/garbage.xml"), ("good", "/good.xml")):
        scheduler.add(FeedSource(name, FeedOptions(url=site.base + path)), interval_s=0.05, jitter=0.5)
    stop = threading.Event()
    runner = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (published.events and scheduler.status()["boom"]["failures"] >= 2
                                               and scheduler.status()["garbage"]["failures"] >= 2):
        time.sleep(0.05)
    stop.set()
    runner.join(10)
    assert not runner.is_alive()
    status = scheduler.status()
    assert published.urls() == [f"{site.base}/v/ok", f"{site.base}/v/ok.mp4"]  # once, despite many polls
    assert status["good"]["last_error"] is None and status["good"]["polls"] >= 1
    assert "Transient" in status["boom"]["last_error"] and "500" in status["boom"]["last_error"]
    assert "SourceError" in status["garbage"]["last_error"]
    # the error is persisted too, so it is visible after a restart
    restarted = Scheduler(StateStore.in_data_dir(tmp_path), fetcher, Published())
    restarted.add(FeedSource("boom", FeedOptions(url=site.base + "/boom.xml")), interval_s=60)
    assert "500" in (restarted.status()["boom"]["last_error"] or "")


def test_publish_failure_keeps_items_for_the_next_poll(site: Site, fetcher: GuardedFetcher, tmp_path: Path) -> None:
    site.put("/feed.xml", rss(("one", "/v/1")), "application/rss+xml")

    def failing(events: list[UrlDiscovered]) -> None:
        raise RuntimeError("broker down")

    store = StateStore.in_data_dir(tmp_path)
    scheduler = Scheduler(store, fetcher, failing)
    scheduler.add(FeedSource("feed", FeedOptions(url=f"{site.base}/feed.xml")), interval_s=60)
    scheduler.poll_once("feed")
    assert "broker down" in (scheduler.status()["feed"]["last_error"] or "")
    scheduler, published = _restart(tmp_path, fetcher, FeedSource("feed", FeedOptions(url=f"{site.base}/feed.xml")))
    scheduler.poll_once("feed")
    assert len(published.events) == 2


def test_guard_refuses_loopback_unless_allowed(site: Site) -> None:
    site.put("/feed.xml", rss(("one", "/v/1")))
    with GuardedFetcher(AddressPolicy()) as closed, pytest.raises(Blocked, match="loopback"):
        closed.get(f"{site.base}/feed.xml")
    assert site.hits == []  # refused before any connection
    # a redirect is checked afresh: only 127.0.0.1 is allowed, the redirect goes to 127.0.0.2
    site.put("/hop", "", status=302, Location=site.base.replace("127.0.0.1", "127.0.0.2") + "/feed.xml")
    with GuardedFetcher(AddressPolicy.from_networks(["127.0.0.1/32"])) as narrow:
        with pytest.raises(Blocked, match=r"127\.0\.0\.2"):
            narrow.get(f"{site.base}/hop")
        site.put("/ok-hop", "", status=301, Location="/feed.xml")
        assert narrow.get(f"{site.base}/ok-hop").url == f"{site.base}/feed.xml"  # refusals do not linger


def test_fetcher_limits_and_statuses(site: Site) -> None:
    small = GuardedFetcher(LOOPBACK, max_bytes=100, max_redirects=2)
    site.put("/fine", b"x" * 100)
    site.put("/big", b"x" * 1000)
    site.put("/loop", "", status=302, Location="/loop")
    site.put("/gone", "", status=410)
    site.put("/busy", "", status=503)
    with pytest.raises(TooLarge):
        small.get(f"{site.base}/big")
    with pytest.raises(Blocked, match="too many redirects"):
        small.get(f"{site.base}/loop")
    with pytest.raises(NotFound):
        small.get(f"{site.base}/gone")
    with pytest.raises(Transient):
        small.get(f"{site.base}/busy")
    assert site.hits.count("/loop") == 3
    assert small.get(f"{site.base}/fine").body == b"x" * 100  # exactly the limit is allowed
    small.close()


@pytest.fixture
def kinds(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A private ``SOURCE_KINDS`` with every kind installed, so that other tests see the module as it was."""
    monkeypatch.setattr("ingest.crawler.SOURCE_KINDS", {})
    return install()


def test_sources_file_example_loads_with_every_kind(kinds: dict[str, object]) -> None:
    assert set(kinds) == set(KINDS)
    config = load_sources(Path(__file__).parent.parent / "examples" / "sources.yaml")
    assert {s.kind for s in config.sources} == set(KINDS)
    for entry in config.sources:
        assert build(entry).name == entry.name


def test_scheduler_for_a_sources_file(kinds: dict[str, object], tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    scheduler = scheduler_for(settings, load_sources(Path(__file__).parent.parent / "examples" / "sources.yaml"), print)
    scheduler.fetcher.close()  # type: ignore[attr-defined]
    assert set(scheduler.status()) == {"example-feed", "reddit-videos", "news-site", "research-batch",
                                       "channel-uploads"}
    bad = SourcesFile(sources=[
        SourceConfig(name="r", kind="reddit", options={"subreddit": "../etc"}),
        SourceConfig(name="p", kind="page", options={}),
        SourceConfig(name="p", kind="file", options={"path": "x"}),
    ])
    with pytest.raises(ContractError) as caught:
        scheduler_for(settings, bad, print)
    assert caught.value.fields == ["sources.0.options.subreddit", "sources.1.options", "sources.2.name"]
