"""Canonical URLs, table-driven: every spelling of one post maps to one URL, others stay apart."""

from __future__ import annotations

import pytest

from deepwatch.media.errors import Unsupported
from deepwatch.media.urls import canonical_url, platform_of

YT = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
CASES: dict[str, list[tuple[str, str]]] = {
    "generic": [
        ("HTTPS://Example.COM:443/a/b.mp4#t=3", "https://example.com/a/b.mp4"),
        ("http://example.com:80/", "http://example.com/"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com/v.mp4?b=2&a=1&utm_source=x&UTM_Medium=y&fbclid=z&gclid=q", "https://example.com/v.mp4?a=1&b=2"),
        ("https://example.com/p?si=abc&feature=share&igshid=1&id=7", "https://example.com/p?id=7"),
        ("https://user:pw@example.com/x", "https://example.com/x"),
        ("https://example.com./x", "https://example.com/x"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        ("https://[::1]:443/x", "https://[::1]/x"),
        ("https://example.com/x?empty=&a=1", "https://example.com/x?a=1&empty="),
    ],
    "youtube": [
        ("https://youtu.be/dQw4w9WgXcQ?si=abc", YT),
        ("https://www.youtube.com/shorts/dQw4w9WgXcQ", YT),
        ("https://m.youtube.com/watch?v=dQw4w9WgXcQ&t=42s&feature=share", YT),
        ("https://music.youtube.com/watch?v=dQw4w9WgXcQ&list=RD1", YT),
        ("https://www.youtube.com/embed/dQw4w9WgXcQ", YT),
        ("https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ", YT),
        ("https://www.youtube.com/live/dQw4w9WgXcQ", YT),
        ("https://youtube.com/watch?t=1&v=dQw4w9WgXcQ", YT),
        ("https://www.youtube.com/@SomeChannel/videos", "https://www.youtube.com/@SomeChannel/videos"),
        ("https://www.youtube.com/watch?v=short", "https://www.youtube.com/watch?v=short"),
    ],
    "tiktok": [
        ("https://www.tiktok.com/@someone/video/7300000000000000001?is_from_webapp=1", "https://www.tiktok.com/@/video/7300000000000000001"),
        ("https://m.tiktok.com/v/7300000000000000001.html", "https://www.tiktok.com/@/video/7300000000000000001"),
        ("https://www.tiktok.com/embed/v2/7300000000000000001", "https://www.tiktok.com/@/video/7300000000000000001"),
        ("https://www.tiktok.com/@other/video/7300000000000000001", "https://www.tiktok.com/@/video/7300000000000000001"),
        ("https://vm.tiktok.com/ZMabc123/", "https://vm.tiktok.com/ZMabc123/"),
    ],
    "x": [
        ("https://x.com/someone/status/1790000000000000001", "https://x.com/i/status/1790000000000000001"),
        ("https://twitter.com/someone/status/1790000000000000001?s=20&t=abc", "https://x.com/i/status/1790000000000000001"),
        ("https://mobile.twitter.com/someone/status/1790000000000000001/photo/1", "https://x.com/i/status/1790000000000000001"),
        ("https://x.com/someone/status/1790000000000000001/video/1", "https://x.com/i/status/1790000000000000001"),
        ("https://x.com/i/web/status/1790000000000000001", "https://x.com/i/status/1790000000000000001"),
        ("https://fxtwitter.com/a/status/1790000000000000001", "https://x.com/i/status/1790000000000000001"),
    ],
    "instagram": [
        ("https://www.instagram.com/reel/C1abcDEF23/?igshid=xyz", "https://www.instagram.com/p/C1abcDEF23/"),
        ("https://instagram.com/p/C1abcDEF23", "https://www.instagram.com/p/C1abcDEF23/"),
        ("https://www.instagram.com/someone/reel/C1abcDEF23/", "https://www.instagram.com/p/C1abcDEF23/"),
        ("https://www.instagram.com/reels/C1abcDEF23/", "https://www.instagram.com/p/C1abcDEF23/"),
        ("https://www.instagram.com/tv/C1abcDEF23/", "https://www.instagram.com/p/C1abcDEF23/"),
    ],
    "reddit": [
        ("https://www.reddit.com/r/videos/comments/1abcde/some_title_here/", "https://www.reddit.com/comments/1abcde/"),
        ("https://old.reddit.com/r/videos/comments/1abcde/", "https://www.reddit.com/comments/1abcde/"),
        ("https://np.reddit.com/r/videos/comments/1ABCDE/some_title/?share_id=x", "https://www.reddit.com/comments/1abcde/"),
        ("https://redd.it/1abcde", "https://www.reddit.com/comments/1abcde/"),
        ("https://v.redd.it/abc123xyz", "https://v.redd.it/abc123xyz"),
        ("https://www.reddit.com/r/videos/new/", "https://www.reddit.com/r/videos/new/"),
    ],
    "facebook": [
        ("https://www.facebook.com/watch/?v=1234567890", "https://www.facebook.com/watch/?v=1234567890"),
        ("https://m.facebook.com/watch?v=1234567890&mibextid=abc", "https://www.facebook.com/watch/?v=1234567890"),
        ("https://www.facebook.com/reel/1234567890", "https://www.facebook.com/watch/?v=1234567890"),
        ("https://web.facebook.com/SomePage/videos/1234567890/", "https://www.facebook.com/watch/?v=1234567890"),
        ("https://www.facebook.com/video.php?v=1234567890", "https://www.facebook.com/watch/?v=1234567890"),
    ],
    "vimeo": [
        ("https://vimeo.com/76979871", "https://vimeo.com/76979871"),
        ("https://player.vimeo.com/video/76979871?autoplay=1", "https://vimeo.com/76979871"),
        ("https://vimeo.com/channels/staffpicks/76979871", "https://vimeo.com/76979871"),
        ("https://vimeo.com/groups/shortfilms/videos/76979871", "https://vimeo.com/76979871"),
        ("https://vimeo.com/76979871/abcdef1234", "https://vimeo.com/76979871/abcdef1234"),
        ("https://player.vimeo.com/video/76979871?h=abcdef1234", "https://vimeo.com/76979871/abcdef1234"),
    ],
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [pytest.param(u, e, id=f"{platform}:{u}") for platform, rows in CASES.items() for u, e in rows],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected
    assert canonical_url(expected) == expected  # idempotent


@pytest.mark.parametrize(("platform", "rows"), list(CASES.items()))
def test_platform_detection(platform: str, rows: list[tuple[str, str]]) -> None:
    for url, expected in rows:
        assert platform_of(url) == (platform if platform != "generic" else "web")
        assert platform_of(expected) == platform_of(url)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a", "file:///etc/passwd", "javascript:alert(1)", "example.com/x", "https://", "", "https://a b",
     "https://example.com:99999/", "data:video/mp4;base64,AAAA"],
)
def test_non_http_urls_are_unsupported(url: str) -> None:
    with pytest.raises(Unsupported):
        canonical_url(url)


def test_distinct_posts_stay_distinct() -> None:
    assert canonical_url("https://youtu.be/dQw4w9WgXcQ") != canonical_url("https://youtu.be/aaaaaaaaaaa")
    assert canonical_url("https://x.com/a/status/1") != canonical_url("https://x.com/a/status/2")
    assert canonical_url("https://example.com/v?id=1") != canonical_url("https://example.com/v?id=2")
    assert platform_of("https://notyoutube.com/watch?v=dQw4w9WgXcQ") == "web"
