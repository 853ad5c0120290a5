"""RSS 2.0 and Atom feeds: item links, enclosures and ``media:content``.

Parsing is pure (:func:`parse_feed`) and refuses any document with a DTD or entity declaration, so
that an XML bomb (billion laughs, external entities) never reaches the parser. :func:`safe_xml` is
shared with the sitemap reader in :mod:`ingest.sources.pages`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from pydantic import Field

from deepwatch.contracts import Hints, Part, parse
from ingest.fetcher import Fetcher
from ingest.sources.base import Parsed, Poll, SourceContext, SourceError, clip, new_only
from ingest.state import SourceState

if TYPE_CHECKING:
    from ingest.crawler import SourceConfig

ATOM = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
DC = "{http://purl.org/dc/elements/1.1/}"
DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def safe_xml(body: bytes) -> ET.Element:
    """Parse XML that declares no DTD and no entities; raise :class:`SourceError` otherwise."""
    head = body[:4]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        # the declaration check below reads bytes as ASCII; UTF-16/32 would hide a DOCTYPE from it
        raise SourceError("UTF-16/UTF-32 XML is not accepted")
    if DECLARATION.search(body):
        raise SourceError("XML with a DOCTYPE or ENTITY declaration is refused (possible XML bomb)")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise SourceError(f"malformed XML: {exc}") from None


def _text(el: ET.Element | None) -> str | None:
    return el.text.strip() if el is not None and el.text and el.text.strip() else None


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)  # RSS: RFC 822
    except (TypeError, ValueError):
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))  # Atom: RFC 3339
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _hints(title: str | None, author: str | None, date: str | None, text: str | None) -> Hints:
    return Hints(title=clip(title, 1000), uploader=clip(author, 300), posted_at=_date(date), text=clip(text, 10_000))


def _media(el: ET.Element) -> list[str | None]:
    """``media:content`` URLs, also inside ``media:group``."""
    return [c.get("url") for c in el.iter(f"{MEDIA}content")]


def parse_feed(body: bytes, base_url: str) -> Parsed:
    """Every item's media and page URLs from an RSS 2.0 or Atom document."""
    root = safe_xml(body)
    parsed = Parsed()
    if root.tag == f"{ATOM}feed":
        for entry in root.iter(f"{ATOM}entry"):
            hints = _hints(_text(entry.find(f"{ATOM}title")), _text(entry.find(f"{ATOM}author/{ATOM}name")),
                           _text(entry.find(f"{ATOM}published")) or _text(entry.find(f"{ATOM}updated")),
                           _text(entry.find(f"{ATOM}summary")))
            for link in entry.findall(f"{ATOM}link"):
                if link.get("rel", "alternate") in ("alternate", "enclosure"):
                    parsed.add(link.get("href"), base_url, hints)
            for url in _media(entry):
                parsed.add(url, base_url, hints)
    elif root.tag == "rss":
        for item in root.iter("item"):
            hints = _hints(_text(item.find("title")), _text(item.find(f"{DC}creator")) or _text(item.find("author")),
                           _text(item.find("pubDate")), _text(item.find("description")))
            parsed.add(_text(item.find("link")), base_url, hints)
            for enclosure in item.findall("enclosure"):
                parsed.add(enclosure.get("url"), base_url, hints)
            for url in _media(item):
                parsed.add(url, base_url, hints)
    else:
        raise SourceError(f"not an RSS or Atom feed (root element {root.tag!r})")
    return parsed


class FeedOptions(Part):
    url: str = Field(min_length=8)


class FeedSource:
    def __init__(self, name: str, options: FeedOptions) -> None:
        self.name = name
        self.options = options

    @classmethod
    def from_config(cls, config: SourceConfig, context: SourceContext | None = None) -> FeedSource:
        return cls(config.name, parse(FeedOptions, config.options))

    def poll(self, state: SourceState, fetch: Fetcher) -> Poll:
        resp = fetch.get(self.options.url)
        return new_only(parse_feed(resp.body, resp.url), state)
