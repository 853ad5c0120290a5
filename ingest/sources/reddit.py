"""Reddit listings: a subreddit's ``new`` or ``hot`` JSON, following the ``after`` cursor.

Each post gives its outbound link (not for self posts), and for Reddit-hosted video the fallback MP4
and the post's permalink. A poll starts at the top of the listing and follows ``after`` only until it
reaches a page holding an already-seen post (it has caught up) or ``max_pages``: listings change under
a stored ``after``, so resuming from one would miss the newest posts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from pydantic import Field

from deepwatch.contracts import Hints, Part, parse
from ingest.fetcher import Fetcher
from ingest.sources.base import Parsed, Poll, SourceContext, SourceError, clip, new_only
from ingest.state import SourceState

if TYPE_CHECKING:
    from ingest.crawler import SourceConfig

# permalinks are relative; they name the post on Reddit whatever host served the listing
REDDIT = "https://www.reddit.com"


def _posted(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e11:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_listing(body: bytes) -> Parsed:
    """The URLs in one listing page; ``next_cursor`` is its ``after``."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"listing is not JSON: {exc}") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    children = data.get("children") if isinstance(data, dict) else None
    if not isinstance(children, list):
        raise SourceError("not a Reddit listing (no data.children)")
    parsed = Parsed(next_cursor=_str(data.get("after")))
    for i, child in enumerate(children):
        post = child.get("data") if isinstance(child, dict) else None
        if not isinstance(post, dict):
            parsed.dropped.append(f"children[{i}]: no data")
            continue
        hints = Hints(title=clip(_str(post.get("title")), 1000), uploader=clip(_str(post.get("author")), 300),
                      posted_at=_posted(post.get("created_utc")), text=clip(_str(post.get("selftext")), 10_000))
        if not post.get("is_self"):
            parsed.add(_str(post.get("url_overridden_by_dest")) or _str(post.get("url")), hints=hints)
        media = post.get("secure_media") or post.get("media")
        video = media.get("reddit_video") if isinstance(media, dict) else None
        if isinstance(video, dict):
            parsed.add(_str(video.get("fallback_url")), hints=hints)
            parsed.add(_str(post.get("permalink")), REDDIT, hints)
    return parsed


class RedditOptions(Part):
    subreddit: str = Field(pattern=r"^[A-Za-z0-9_]{2,32}$")
    listing: Literal["new", "hot"] = "new"
    base_url: str = Field(REDDIT, description="where the listing JSON is fetched from")
    limit: int = Field(100, ge=1, le=100)
    max_pages: int = Field(5, ge=1, le=50)


class RedditSource:
    def __init__(self, name: str, options: RedditOptions) -> None:
        self.name = name
        self.options = options

    @classmethod
    def from_config(cls, config: SourceConfig, context: SourceContext | None = None) -> RedditSource:
        return cls(config.name, parse(RedditOptions, config.options))

    def page_url(self, after: str | None) -> str:
        o = self.options
        query = {"limit": o.limit, "raw_json": 1} | ({"after": after} if after else {})
        return f"{o.base_url.rstrip('/')}/r/{o.subreddit}/{o.listing}.json?{urlencode(query)}"

    def poll(self, state: SourceState, fetch: Fetcher) -> Poll:
        combined = Parsed()
        after: str | None = None
        for _page in range(self.options.max_pages):
            page = parse_listing(fetch.get(self.page_url(after)).body)
            combined.dropped += page.dropped
            for item in page.found:
                combined.keep(item)
            after = page.next_cursor
            if not after or any(state.is_seen(f.id) for f in page.found):
                break
        return new_only(combined, state)
