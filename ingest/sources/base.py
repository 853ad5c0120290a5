"""What every source shares: the items it finds, the result of one poll, the ``Source`` protocol.

Kept apart from the package ``__init__`` (the registry) so that source modules can import these
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urljoin

from deepwatch.contracts import Hints
from deepwatch.media.errors import MediaError
from deepwatch.media.urls import canonical_url
from ingest.fetcher import Fetcher
from ingest.robots import RobotsCache
from ingest.state import SourceState


class SourceError(Exception):
    """A whole poll failed (the document cannot be parsed, the file cannot be read)."""


@dataclass(frozen=True)
class Found:
    """One URL a source found; ``id`` (its canonical URL) is what the seen set remembers."""

    url: str
    id: str
    hints: Hints | None = None


@dataclass
class Parsed:
    """What a pure parser got out of one document: the items, and why anything was left out."""

    found: list[Found] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    next_cursor: str | None = None
    # the ids in ``found``: a set, because a file source may hold a hundred thousand lines
    _ids: set[str] = field(default_factory=set, repr=False)

    def add(self, url: str | None, base: str | None = None, hints: Hints | None = None) -> None:
        """Add ``url`` (resolved against ``base``) or note why it was dropped; repeats are ignored."""
        item = make_found(url, base, hints)
        if isinstance(item, str):
            self.dropped.append(item)
        else:
            self.keep(item)

    def keep(self, item: Found) -> None:
        """Add an item unless one with its id is already there."""
        if item.id not in self._ids:
            self._ids.add(item.id)
            self.found.append(item)


@dataclass
class Poll:
    """One poll's new items (not seen before) and the state to keep once they are published."""

    found: list[Found]
    state: SourceState
    dropped: list[str] = field(default_factory=list)
    disallowed: list[str] = field(default_factory=list)  # URLs robots.txt kept the crawler from


@dataclass(frozen=True)
class SourceContext:
    """What the crawler hands every source it builds: one robots.txt cache for all page sources
    (None when ``crawler_robots`` is off)."""

    robots: RobotsCache | None = field(default_factory=RobotsCache)


class Source(Protocol):
    name: str

    def poll(self, state: SourceState, fetch: Fetcher) -> Poll:
        """Find new items; must not mutate ``state``. Raises on a failed poll (the scheduler isolates it)."""
        ...


def make_found(url: str | None, base: str | None = None, hints: Hints | None = None) -> Found | str:
    """A :class:`Found`, or the reason ``url`` is not one (empty, not http(s), not a URL)."""
    if not url or not url.strip():
        return "empty URL"
    try:
        absolute = urljoin(base, url.strip()) if base else url.strip()
        return Found(url=absolute, id=canonical_url(absolute), hints=hints)
    except MediaError as exc:
        return str(exc)
    except ValueError as exc:  # urljoin/urlsplit on a malformed URL (an unclosed IPv6 bracket)
        return f"bad URL {url!r}: {exc}"


def new_only(parsed: Parsed, state: SourceState, cursor: str | None = None) -> Poll:
    """The unseen part of ``parsed`` and the state that remembers it."""
    seen = set(state.seen)
    fresh = [f for f in parsed.found if f.id not in seen]
    new_state = state.with_seen(f.id for f in fresh)
    if cursor is not None:
        new_state = new_state.model_copy(update={"cursor": cursor})
    return Poll(found=fresh, state=new_state, dropped=parsed.dropped)


def clip(text: str | None, limit: int) -> str | None:
    """Hints have length limits; free text from the web is cut, not refused."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text[:limit] or None
