"""Web pages: media in HTML, and optionally the pages a sitemap lists, within one domain.

:func:`parse_page` (pure, stdlib ``html.parser``) finds ``<video>``/``<source>`` sources, ``<img>``
whose declared width and height both reach a minimum (small images are icons and avatars), the
``og:video``/``og:image`` meta tags, and links to known platforms (:mod:`deepwatch.media.urls`).
Relative URLs resolve against the page (or its ``<base href>``). :func:`parse_sitemap` reads a sitemap
or sitemap index with the same DTD-refusing XML reader as feeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from pydantic import Field

from deepwatch.contracts import Part, parse
from deepwatch.media.errors import MediaError
from deepwatch.media.urls import platform_of
from ingest.fetcher import Fetcher
from ingest.robots import RobotsCache
from ingest.sources.base import Parsed, Poll, SourceContext, SourceError, new_only
from ingest.sources.feeds import safe_xml
from ingest.state import SourceState

if TYPE_CHECKING:
    from ingest.crawler import SourceConfig

SITEMAP = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
OG_MEDIA = {"og:video", "og:video:url", "og:video:secure_url", "og:image", "og:image:url", "og:image:secure_url"}
PIXELS = re.compile(r"^\s*(\d+)")


def _pixels(value: str | None) -> int | None:
    match = PIXELS.match(value or "")
    return int(match.group(1)) if match else None


class _MediaParser(HTMLParser):
    def __init__(self, page_url: str, min_size: int) -> None:
        super().__init__(convert_charrefs=True)
        self.base = page_url
        self.min_size = min_size
        self.urls: list[str] = []
        self.dropped: list[str] = []

    def _join(self, url: str | None) -> str | None:
        try:
            return urljoin(self.base, url or "")
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            self.dropped.append(f"bad URL {url!r}: {exc}")
            return None

    def _add(self, url: str | None) -> None:
        joined = self._join(url)
        if joined:
            self.urls.append(joined)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "base" and a.get("href"):
            self.base = self._join(a["href"]) or self.base
        elif tag in ("video", "source") and a.get("src"):
            self._add(a["src"])
        elif tag == "img" and a.get("src"):
            width, height = _pixels(a.get("width")), _pixels(a.get("height"))
            if width is None or height is None:
                self.dropped.append(f"img without declared size: {a['src']}")
            elif min(width, height) < self.min_size:
                self.dropped.append(f"img {width}x{height} below {self.min_size}px: {a['src']}")
            else:
                self._add(a["src"])
        elif tag == "meta" and (a.get("property") or a.get("name") or "").lower() in OG_MEDIA and a.get("content"):
            self._add(a["content"])
        elif tag == "a" and a.get("href"):
            href = self._join(a["href"])
            if href and platform_of(href) != "web":
                self.urls.append(href)


def parse_page(html: str, page_url: str, min_size: int = 200) -> Parsed:
    """The media and platform links in one HTML page."""
    parser = _MediaParser(page_url, min_size)
    parser.feed(html)  # html.parser tolerates any input; malformed markup yields fewer tags, not errors
    parser.close()
    parsed = Parsed(dropped=parser.dropped)
    for url in parser.urls:
        parsed.add(url)
    return parsed


def parse_sitemap(body: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of a ``urlset`` or a ``sitemapindex``."""
    root = safe_xml(body)
    if root.tag == f"{SITEMAP}urlset":
        return [loc.text.strip() for loc in root.iter(f"{SITEMAP}loc") if loc.text], []
    if root.tag == f"{SITEMAP}sitemapindex":
        return [], [loc.text.strip() for loc in root.iter(f"{SITEMAP}loc") if loc.text]
    raise SourceError(f"not a sitemap (root element {root.tag!r})")


def host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def decode(body: bytes, content_type: str) -> str:
    match = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
    try:
        return body.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


class PageOptions(Part):
    urls: list[str] = Field(default_factory=list, description="pages read on every poll")
    sitemap: str | None = Field(None, description="a sitemap (or index) whose pages are read too")
    min_size: int = Field(200, ge=1, description="smallest width and height of an <img> that counts")
    max_depth: int = Field(2, ge=0, le=5, description="nested sitemap indexes followed")
    max_pages: int = Field(50, ge=1, le=1000)
    robots: bool = Field(True, description="honour robots.txt (also needs the crawler_robots setting)")


class PageSource:
    def __init__(self, name: str, options: PageOptions, robots: RobotsCache | None = None) -> None:
        if not options.urls and not options.sitemap:
            raise SourceError("a page source needs urls or a sitemap")
        self.name = name
        self.options = options
        self.robots = robots if options.robots else None

    @classmethod
    def from_config(cls, config: SourceConfig, context: SourceContext | None = None) -> PageSource:
        context = context or SourceContext()
        return cls(config.name, parse(PageOptions, config.options), context.robots)

    def _allowed(self, url: str, fetch: Fetcher, crawl: _Crawl) -> bool:
        refusal = self.robots.refusal(url, fetch) if self.robots is not None else None
        if refusal is not None:
            crawl.disallowed.append(url)
            crawl.parsed.dropped.append(f"{url}: {refusal}")
        return refusal is None

    def pages(self, fetch: Fetcher, crawl: _Crawl) -> list[str]:
        """The configured pages, then the sitemap's pages on the sitemap's own host, up to ``max_pages``."""
        pages = list(self.options.urls)
        dropped = crawl.parsed.dropped
        if self.options.sitemap:
            host = host_of(self.options.sitemap)
            queue, done = [(self.options.sitemap, 0)], set()
            while queue and len(pages) < self.options.max_pages:
                sitemap, depth = queue.pop(0)
                if sitemap in done:
                    continue
                done.add(sitemap)
                if not self._allowed(sitemap, fetch, crawl):
                    continue
                found, nested = parse_sitemap(fetch.get(sitemap).body)
                for url in found + nested:
                    if host_of(url) != host:
                        dropped.append(f"outside {host}: {url}")
                pages += [u for u in found if host_of(u) == host]
                if depth < self.options.max_depth:
                    queue += [(u, depth + 1) for u in nested if host_of(u) == host]
                elif nested:
                    dropped.append(f"sitemap depth limit {self.options.max_depth} reached at {sitemap}")
        return list(dict.fromkeys(pages))[: self.options.max_pages]

    def poll(self, state: SourceState, fetch: Fetcher) -> Poll:
        crawl = _Crawl()
        combined = crawl.parsed
        pages = [p for p in self.pages(fetch, crawl) if self._allowed(p, fetch, crawl)]
        errors = []
        for page in pages:
            try:
                resp = fetch.get(page)
            except MediaError as exc:
                errors.append(str(exc))  # one broken page of many does not fail the poll
                continue
            parsed = parse_page(decode(resp.body, resp.content_type), resp.url, self.options.min_size)
            combined.dropped += parsed.dropped
            for item in parsed.found:
                combined.keep(item)
        if errors and len(errors) == len(pages):
            raise SourceError(f"every page failed: {errors[0]}")
        combined.dropped += errors
        poll = new_only(combined, state)
        poll.disallowed = crawl.disallowed
        return poll


@dataclass
class _Crawl:
    """One poll's findings so far, and the URLs robots.txt kept it from."""

    parsed: Parsed = field(default_factory=Parsed)
    disallowed: list[str] = field(default_factory=list)
