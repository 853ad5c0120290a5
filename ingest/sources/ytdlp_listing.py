"""yt-dlp listings: channels, playlists and user pages, read flat (``extract_flat``), newest first.

yt-dlp lists a channel's or playlist's entries without resolving each one; the source keeps them in
listing order (newest first for channels) up to the first entry it has already seen, so a poll stops
at the newest item of the previous poll. Every request yt-dlp makes goes through a
:class:`GuardProxy` with the fetcher's guard policy, and at most ``fetch_max_redirects`` redirects.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field

from deepwatch.contracts import Hints, Part, parse
from deepwatch.media.errors import Timeout
from deepwatch.media.fetch import classify_failure  # the media fetch's mapping of yt-dlp failures to typed errors
from deepwatch.media.proxy import GuardProxy
from ingest.fetcher import Fetcher
from ingest.sources.base import Parsed, Poll, SourceContext, clip
from ingest.state import SourceState

if TYPE_CHECKING:
    from ingest.crawler import SourceConfig


def _posted(entry: dict[str, Any]) -> datetime | None:
    stamp = entry.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and 0 < stamp < 1e11:
        return datetime.fromtimestamp(stamp, tz=UTC)
    day = entry.get("upload_date")
    if isinstance(day, str) and len(day) == 8 and day.isdigit():
        return datetime(int(day[:4]), int(day[4:6]), int(day[6:]), tzinfo=UTC)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_entries(info: dict[str, Any], base: str | None = None) -> Parsed:
    """The entry URLs of a flat yt-dlp result, in listing order (pure); relative ones resolve against ``base``."""
    parsed = Parsed()
    entries = info.get("entries")
    if entries is None:  # a single video, not a listing
        entries = [info]
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            parsed.dropped.append(f"entry {i}: not an object")
            continue
        hints = Hints(title=clip(_str(entry.get("title")), 1000),
                      uploader=clip(_str(entry.get("uploader")) or _str(entry.get("channel")), 300),
                      posted_at=_posted(entry), text=clip(_str(entry.get("description")), 10_000))
        url = _str(entry.get("webpage_url")) or _str(entry.get("url"))
        # yt-dlp passes a generic listing's links through as written; a bare id (with an ie_key) is no URL
        parsed.add(url, base if url and url.startswith("/") else None, hints)
    return parsed


class YtdlpOptions(Part):
    url: str = Field(min_length=8, description="a channel, playlist or user page")
    max_items: int = Field(50, ge=1, le=1000, description="newest entries listed per poll")
    timeout_s: float = Field(120.0, gt=0, le=600)


class YtdlpListingSource:
    def __init__(self, name: str, options: YtdlpOptions) -> None:
        self.name = name
        self.options = options

    @classmethod
    def from_config(cls, config: SourceConfig, context: SourceContext | None = None) -> YtdlpListingSource:
        return cls(config.name, parse(YtdlpOptions, config.options))

    def list_flat(self, fetch: Fetcher) -> dict[str, Any]:
        # paced and retried like the crawler's own requests: one listing is one request to the site's host
        return fetch.paced(self.options.url, lambda: self._list_flat(fetch))

    def _list_flat(self, fetch: Fetcher) -> dict[str, Any]:
        from deepwatch.media.redirects import LimitedYoutubeDL, RedirectLimit  # imports yt-dlp: only when used

        redirects = RedirectLimit(fetch.max_redirects)
        result: dict[str, Any] = {}
        with GuardProxy(fetch.policy, timeout_s=min(self.options.timeout_s, 60.0)) as proxy:
            params = {"proxy": proxy.url, "extract_flat": "in_playlist", "playlistend": self.options.max_items,
                      "skip_download": True, "quiet": True, "no_warnings": True, "cachedir": False,
                      "socket_timeout": min(self.options.timeout_s, 60.0), "retries": 1}

            def run() -> None:
                try:
                    with LimitedYoutubeDL(params, redirects) as ydl:
                        result["info"] = ydl.extract_info(self.options.url, download=False, process=True)
                except Exception as exc:  # yt-dlp raises many kinds; the media fetch's mapping types them
                    result["error"] = exc

            thread = threading.Thread(target=run, name=f"yt-dlp-{self.name}", daemon=True)
            thread.start()
            thread.join(self.options.timeout_s)
            if thread.is_alive():
                proxy.close()  # cuts its connections, so the listing thread fails soon
                raise Timeout(f"listing {self.options.url} took longer than {self.options.timeout_s:.0f} s")
            if "error" in result:
                raise classify_failure(result["error"], proxy, redirects)
        return result.get("info") or {}

    def poll(self, state: SourceState, fetch: Fetcher) -> Poll:
        parsed = parse_entries(self.list_flat(fetch), self.options.url)
        fresh = []
        for item in parsed.found:
            if state.is_seen(item.id):
                break  # the newest item of an earlier poll: everything after it is older
            fresh.append(item)
        cursor = parsed.found[0].id if parsed.found else state.cursor
        new_state = state.with_seen(f.id for f in fresh).model_copy(update={"cursor": cursor})
        return Poll(found=fresh, state=new_state, dropped=parsed.dropped)
