"""Crawler sources: each a small plug-in behind the :class:`Source` protocol.

A source kind is a factory from its :class:`~ingest.crawler.SourceConfig` to a :class:`Source`;
:data:`KINDS` maps kind names (as written in the sources file) to factories, and :func:`install` adds
them to :data:`ingest.crawler.SOURCE_KINDS`, which ``load_sources`` validates against. ``install`` is
explicit rather than an import side effect so that ``ingest.crawler`` may import this package without
a circular import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ingest.sources.base import Found, Parsed, Poll, Source, SourceContext, SourceError, make_found, new_only
from ingest.sources.feeds import FeedSource
from ingest.sources.files import FileSource
from ingest.sources.pages import PageSource
from ingest.sources.reddit import RedditSource
from ingest.sources.ytdlp_listing import YtdlpListingSource

if TYPE_CHECKING:
    from ingest.crawler import SourceConfig

__all__ = ["KINDS", "Found", "Parsed", "Poll", "Source", "SourceContext", "SourceError", "build", "install",
           "make_found", "new_only"]

KINDS: dict[str, Callable[[SourceConfig, SourceContext | None], Source]] = {
    "feed": FeedSource.from_config,
    "reddit": RedditSource.from_config,
    "page": PageSource.from_config,
    "file": FileSource.from_config,
    "ytdlp": YtdlpListingSource.from_config,
}


def install(kinds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register every kind in ``kinds`` (default: ``ingest.crawler.SOURCE_KINDS``); idempotent."""
    if kinds is None:
        from ingest.crawler import SOURCE_KINDS as kinds
    kinds.update(KINDS)
    return kinds


def build(config: SourceConfig, context: SourceContext | None = None) -> Source:
    """The source a config describes; raises ``ContractError`` for bad options, ``KeyError`` for an unknown kind."""
    return KINDS[config.kind](config, context)
