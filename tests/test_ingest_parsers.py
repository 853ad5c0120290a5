"""The crawler's pure parsers on fixture strings: exactly the right URLs, bad input dropped, never a crash."""

from __future__ import annotations

import json

import pytest

from ingest.sources.base import SourceError
from ingest.sources.feeds import parse_feed
from ingest.sources.files import parse_lines
from ingest.sources.pages import parse_page, parse_sitemap
from ingest.sources.reddit import parse_listing
from ingest.sources.ytdlp_listing import parse_entries
from ingest.state import SourceState, StateStore

RSS = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>c</title>
 <item><title>One</title><link>https://news.example/a/1</link><dc:creator>ann</dc:creator>
  <pubDate>Tue, 10 Jun 2025 04:00:00 GMT</pubDate>
  <enclosure url="https://cdn.example/1.mp4" type="video/mp4" length="1"/></item>
 <item><title>Two</title><link>/a/2</link>
  <media:group><media:content url="https://cdn.example/2.mp4"/></media:group></item>
 <item><title>Bad</title><link>javascript:alert(1)</link><enclosure url="ftp://x.example/f"/></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/">
 <entry><title>V</title><author><name>chan</name></author><published>2025-06-10T04:00:00Z</published>
  <link rel="alternate" href="https://www.youtube.com/watch?v=dQw4w9WgXcQ"/>
  <link rel="self" href="https://feeds.example/self"/>
  <link rel="enclosure" href="https://cdn.example/v.mp4"/>
  <media:content url="https://cdn.example/v.jpg"/></entry>
 <entry><title>No rel</title><link href="rel/page"/></entry>
</feed>"""


@pytest.mark.parametrize(
    ("body", "urls"),
    [
        (RSS, ["https://news.example/a/1", "https://cdn.example/1.mp4", "https://feeds.example/a/2",
               "https://cdn.example/2.mp4"]),
        (ATOM, ["https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://cdn.example/v.mp4", "https://cdn.example/v.jpg",
                "https://feeds.example/f/rel/page"]),
    ],
    ids=["rss", "atom"],
)
def test_feeds_find_exactly_their_urls(body: bytes, urls: list[str]) -> None:
    parsed = parse_feed(body, "https://feeds.example/f/feed.xml")
    assert [f.url for f in parsed.found] == urls


def test_feed_hints_and_dropped_reasons() -> None:
    parsed = parse_feed(RSS, "https://feeds.example/")
    first = parsed.found[0].hints
    assert first is not None and first.title == "One" and first.uploader == "ann"
    assert first.posted_at is not None and first.posted_at.year == 2025 and first.posted_at.tzinfo is not None
    assert len(parsed.dropped) == 2 and all("http" in d for d in parsed.dropped)


BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
<rss><channel><item><link>&lol2;</link></item></channel></rss>"""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (BOMB, "DOCTYPE"),
        (b'<?xml version="1.0"?><!doctype rss SYSTEM "file:///etc/passwd"><rss/>', "DOCTYPE"),
        ("<rss/>".encode("utf-16"), "UTF-16"),
        (b"<rss><channel><item>", "malformed"),
        (b"not xml at all", "malformed"),
        (b"<html><body/></html>", "not an RSS"),
        (b"", "malformed"),
    ],
)
def test_feed_refuses_bad_documents(body: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        parse_feed(body, "https://feeds.example/")


def _post(**fields: object) -> dict[str, object]:
    return {"kind": "t3", "data": fields}


LISTING = json.dumps({"kind": "Listing", "data": {"after": "t3_c", "children": [
    _post(id="a", title="link", author="u1", created_utc=1749528000, url="https://www.youtube.com/shorts/dQw4w9WgXcQ",
          url_overridden_by_dest="https://youtu.be/dQw4w9WgXcQ", permalink="/r/s/comments/a/link/"),
    _post(id="b", title="hosted", is_video=True, url="https://v.redd.it/abc", permalink="/r/s/comments/b/hosted/",
          secure_media={"reddit_video": {"fallback_url": "https://v.redd.it/abc/DASH_720.mp4?source=fallback"}}),
    _post(id="c", title="self", is_self=True, url="https://www.reddit.com/r/s/comments/c/self/", selftext="hi"),
    {"kind": "t3"},
    "garbage",
    _post(id="d", url="mailto:someone@example.com"),
]}}).encode()


def test_reddit_listing_urls_and_cursor() -> None:
    parsed = parse_listing(LISTING)
    assert [f.url for f in parsed.found] == [
        "https://youtu.be/dQw4w9WgXcQ",
        "https://v.redd.it/abc",
        "https://v.redd.it/abc/DASH_720.mp4?source=fallback",
        "https://www.reddit.com/r/s/comments/b/hosted/",
    ]
    assert parsed.next_cursor == "t3_c"
    assert parsed.found[0].hints is not None and parsed.found[0].hints.uploader == "u1"
    assert len(parsed.dropped) == 3


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"data": {}}', b'{"data": {"children": 3}}', b"\xff\xfe"])
def test_reddit_refuses_non_listings(body: bytes) -> None:
    with pytest.raises(SourceError):
        parse_listing(body)


PAGE = """<html><head><base href="https://site.example/media/">
<meta property="og:video" content="https://cdn.example/og.mp4"><meta property="og:image" content="og.jpg">
<meta property="og:title" content="ignored"></head><body>
<video src="clip.mp4"><source src="/alt.webm" type="video/webm"></video>
<img src="big.jpg" width="640" height="480"><img src="icon.png" width="16" height="16"><img src="nosize.jpg">
<img src="wide.jpg" width="900px" height="120">
<a href="https://twitter.com/u/status/123">t</a><a href="https://other.example/x">o</a><a href="javascript:void(0)">j</a>
<p>unclosed <b>tags <video src=""></body>"""


def test_page_media_and_platform_links() -> None:
    parsed = parse_page(PAGE, "https://site.example/post/1", min_size=200)
    assert [f.url for f in parsed.found] == [
        "https://cdn.example/og.mp4",
        "https://site.example/media/og.jpg",
        "https://site.example/media/clip.mp4",
        "https://site.example/alt.webm",
        "https://site.example/media/big.jpg",
        "https://twitter.com/u/status/123",
    ]
    assert len(parsed.dropped) == 3  # icon, no size, too narrow


@pytest.mark.parametrize("html", ["", "<<<>>>", "<img src=", "\x00\x01binary", "<a href='http://[::1'>x</a>"])
def test_page_garbage_is_not_a_crash(html: str) -> None:
    assert parse_page(html, "https://site.example/").found == []


def test_sitemaps() -> None:
    urlset = b"""<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc> https://s.example/a </loc></url>
    <url><loc>https://s.example/b</loc></url></urlset>"""
    index = b"""<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
    <sitemap><loc>https://s.example/sm2.xml</loc></sitemap></sitemapindex>"""
    assert parse_sitemap(urlset) == (["https://s.example/a", "https://s.example/b"], [])
    assert parse_sitemap(index) == ([], ["https://s.example/sm2.xml"])
    with pytest.raises(SourceError):
        parse_sitemap(b"<rss/>")


def test_url_lists_lines_and_json_lines() -> None:
    data = (b"# comment\n\nhttps://a.example/1\n"
            b'{"url": "https://b.example/2", "hints": {"title": "T"}}\n'
            b'{"url": 5}\n{"url": "https://c.example/3", "hints": {"nope": 1}}\n{broken\n'
            b"not a url\nhttps://a.example/1\nhttps://partial.example/4")
    parsed, used = parse_lines(data)
    assert [f.url for f in parsed.found] == ["https://a.example/1", "https://b.example/2"]
    assert parsed.found[1].hints is not None and parsed.found[1].hints.title == "T"
    assert len(parsed.dropped) == 4
    assert used == data.rfind(b"\n") + 1  # the unterminated last line is left for later


def test_state_bounded_and_atomic(tmp_path) -> None:
    store = StateStore(tmp_path)
    state = SourceState(max_seen=3).with_seen(["a", "b", "c", "d"]).model_copy(update={"cursor": "7"})
    assert state.seen == ["b", "c", "d"]
    store.save("src", state)
    assert store.load("src") == state
    assert [p.name for p in tmp_path.iterdir()] == ["src.json"]  # no temporary file left behind
    (tmp_path / "broken.json").write_text("{not json")
    assert store.load("broken") == SourceState()
    assert store.load("missing") == SourceState()


def test_ytdlp_flat_entries() -> None:
    info = {"_type": "playlist", "entries": [
        {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "title": "A", "channel": "c", "upload_date": "20250610"},
        {"url": "dQw4w9WgXcQ", "ie_key": "Youtube"},  # a bare id: not a URL
        {"webpage_url": "https://vimeo.com/1", "url": "https://player.vimeo.com/x", "timestamp": 1749528000},
        None,
    ]}
    parsed = parse_entries(info)
    assert [f.url for f in parsed.found] == ["https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://vimeo.com/1"]
    hints = parsed.found[0].hints
    assert hints is not None and hints.uploader == "c" and hints.posted_at is not None
    assert len(parsed.dropped) == 2
    assert [f.url for f in parse_entries({"webpage_url": "https://vimeo.com/2"}).found] == ["https://vimeo.com/2"]
